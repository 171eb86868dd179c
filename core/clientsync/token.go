package clientsync

import (
	"strconv"
	"strings"
)

// Token is a /sync position: one position per stream the response covers,
// written s<events>_<accountdata>_<receipts>_<typing>_<todevice>_<devicelists>_<presence>_<unread>.
// events is the global room event stream (core/rooms), accountdata the
// user's own account data stream, receipts and typing the global ephemeral
// streams, todevice the device's own inbox and devicelists the E2EE
// device-list stream (0 without one).
//
// Every position is a stream position that all earlier positions of its
// stream have committed by (core/stream's Read never passes a gap), so the
// next sync reads exactly what came after. Positions are stored in the
// table, so tokens stay valid across restarts and between Lambda instances.
type Token struct {
	Events      int64
	AccountData int64
	Receipts    int64
	Typing      int64
	ToDevice    int64
	DeviceLists int64
	// Presence is the presence stream (0 without one).
	Presence int64
	// Unread is the server-wide stream of rooms whose unread counts
	// changed (core/push writes it; 0 without one).
	Unread int64
	// NoUnread is set by ParseToken for a token made before the unread
	// part existed: the sync starts that stream at its head.
	NoUnread bool `json:"-"`
}

// tokenParts is how many numbers a token carries; tokens without the last
// ones (device lists, presence, unread) are accepted.
const tokenParts = 8

// String formats the token.
func (t Token) String() string {
	var b strings.Builder
	b.WriteByte('s')
	for i, p := range []int64{t.Events, t.AccountData, t.Receipts, t.Typing, t.ToDevice, t.DeviceLists, t.Presence, t.Unread} {
		if i > 0 {
			b.WriteByte('_')
		}
		b.WriteString(strconv.FormatInt(p, 10))
	}
	return b.String()
}

// ParseToken reads a token made by String; ok is false for anything else.
func ParseToken(s string) (t Token, ok bool) {
	if len(s) < 2 || s[0] != 's' || len(s) > 200 {
		return Token{}, false
	}
	fields := strings.Split(s[1:], "_")
	if len(fields) < tokenParts-3 || len(fields) > tokenParts {
		return Token{}, false
	}
	ptrs := []*int64{&t.Events, &t.AccountData, &t.Receipts, &t.Typing, &t.ToDevice, &t.DeviceLists, &t.Presence, &t.Unread}
	t.NoUnread = len(fields) < tokenParts
	for i, f := range fields {
		if f == "" || len(f) > 18 || (len(f) > 1 && f[0] == '0') || strings.Trim(f, "0123456789") != "" {
			return Token{}, false
		}
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil || n < 0 {
			return Token{}, false
		}
		*ptrs[i] = n
	}
	return t, true
}
