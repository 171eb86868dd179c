// Package accounts keeps users, their devices and access tokens, and the
// sessions of user-interactive authentication, in the table port.
//
// Keys (see ARCHITECTURE.md, "Key schema"):
//
//	user#<@user:server>   account          the account (password hash, flags)
//	user#<@user:server>   device#<id>      one device (name, token key, last seen)
//	user#<@user:server>   profile          the profile fields (displayname, …)
//	token#<sha256(token)> token            access token → user, device, last seen
//	refresh#<sha256>      refresh          refresh token → user, device
//	logintoken#<sha256>   logintoken       single-use m.login.token (TTL)
//	regnonce#<nonce>      regnonce         shared-secret registration nonce (TTL)
//	uia#<session>         uia              a UIA session (TTL)
//
// Account and device items carry a Version and every write of them is
// conditional on the version that was read, so concurrent writers (a
// rename, a login on the same device id, the last-seen refresh, a logout)
// never silently undo each other: the loser re-reads and tries again.
//
// Access tokens are stored only as SHA-256 hashes, so a leaked table gives
// no usable token, and looking a token up by its hash leaks nothing through
// timing that would help guess it.
package accounts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/table"
)

// Service is the accounts repository and its rules.
type Service struct {
	T          table.Table
	ServerName string
	// BcryptCost is the password hashing cost (bcrypt.DefaultCost if 0).
	BcryptCost int
	Now        func() time.Time
}

// Account is what we keep about a user.
type Account struct {
	PasswordHash string `json:"password_hash,omitempty"`
	CreatedMS    int64  `json:"created_ts"`
	Guest        bool   `json:"guest,omitempty"`
	Deactivated  bool   `json:"deactivated,omitempty"`
	Admin        bool   `json:"admin,omitempty"`
	// Suspended and Locked are set by server admins (moderation.go); every
	// access token of the account carries a copy (tokenRecord).
	Suspended bool `json:"suspended,omitempty"`
	Locked    bool `json:"locked,omitempty"`
}

// Device is one login of a user.
type Device struct {
	// Version is the item's version when it was read (not stored in Data).
	Version      int64       `json:"-"`
	ID           id.DeviceID `json:"device_id"`
	DisplayName  string      `json:"display_name,omitempty"`
	TokenKey     string      `json:"token_key,omitempty"`
	LastSeenMS   int64       `json:"last_seen_ts,omitempty"`
	LastSeenIP   string      `json:"last_seen_ip,omitempty"`
	CreatedMS    int64       `json:"created_ts"`
	RefreshKey   string      `json:"refresh_key,omitempty"`
	TokenExpires int64       `json:"token_expires_ts,omitempty"`

	// LastSeenUserAgent is the User-Agent of the request that last set LastSeenIP.
	LastSeenUserAgent string `json:"last_seen_user_agent,omitempty"`
}

// tokenRecord is the token → owner item.
type tokenRecord struct {
	UserID    id.UserID   `json:"user_id"`
	DeviceID  id.DeviceID `json:"device_id"`
	Guest     bool        `json:"guest,omitempty"`
	ExpiresMS int64       `json:"expires_ts,omitempty"`
	// LastSeenMS is when the device's last-seen fields were last written;
	// Authenticate rewrites them only when this is LastSeenInterval old.
	LastSeenMS int64 `json:"last_seen_ts,omitempty"`
	// Suspended and Locked copy the account's flags, so that authenticating
	// stays one read (moderation.go keeps them in step).
	Suspended bool `json:"suspended,omitempty"`
	Locked    bool `json:"locked,omitempty"`
}

// LastSeenInterval bounds how often a device's last-seen time and address
// are written: at most once per interval per token, so ordinary requests
// cost one read and no write.
const LastSeenInterval = 5 * time.Minute

// maxAttempts bounds the re-read-and-retry loops of conditional writes.
const maxAttempts = 8

// Session is the result of a login or registration.
type Session struct {
	UserID       id.UserID
	DeviceID     id.DeviceID
	AccessToken  string
	RefreshToken string
	ExpiresInMS  int64
}

// Item keys.
func userPK(u id.UserID) string        { return "user#" + string(u) }
func accountKey(u id.UserID) table.Key { return table.Key{PK: userPK(u), SK: "account"} }
func deviceKey(u id.UserID, d id.DeviceID) table.Key {
	return table.Key{PK: userPK(u), SK: "device#" + string(d)}
}
func tokenKey(hash string) table.Key { return table.Key{PK: "token#" + hash, SK: "token"} }

// HashToken is the stored form of an access token.
func HashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// NewToken returns a random opaque token with a readable prefix.
func NewToken(prefix string) string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// NewDeviceID returns a random device id of ten upper-case letters.
func NewDeviceID() id.DeviceID {
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return id.DeviceID(b[:])
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// UserID builds a local user id from a localpart, validating it against the
// spec's grammar for new users.
func (s *Service) UserID(localpart string) (id.UserID, error) {
	localpart = strings.ToLower(localpart)
	if err := id.ValidateUserLocalpart(localpart); err != nil {
		return "", httpapi.InvalidUsername("user ID localpart may only contain a-z, 0-9, . _ = - / +")
	}
	u := id.NewUserID(localpart, s.ServerName)
	if len(u) > 255 {
		return "", httpapi.InvalidUsername("user ID is longer than 255 bytes")
	}
	return u, nil
}

// ResolveUser turns a login identifier (a localpart or a full user id of this
// server) into a user id.
func (s *Service) ResolveUser(user string) (id.UserID, error) {
	if strings.HasPrefix(user, "@") {
		u := id.UserID(user)
		local, server, err := u.Parse()
		if err != nil || server != s.ServerName {
			return "", httpapi.Forbidden("invalid username or password")
		}
		return id.NewUserID(strings.ToLower(local), s.ServerName), nil
	}
	return id.NewUserID(strings.ToLower(user), s.ServerName), nil
}

// Available reports whether a localpart can still be registered.
func (s *Service) Available(ctx context.Context, u id.UserID) (bool, error) {
	_, err := s.T.Get(ctx, accountKey(u))
	if errors.Is(err, table.ErrNotFound) {
		return true, nil
	}
	return false, err
}

// GetAccount loads an account (httpapi NotFound if missing).
func (s *Service) GetAccount(ctx context.Context, u id.UserID) (*Account, error) {
	a, _, err := s.getAccountItem(ctx, u)
	return a, err
}

// LoginOptions are the device-related choices of a login or registration.
type LoginOptions struct {
	DeviceID    id.DeviceID
	DisplayName string
	IP          string
	// TokenLifetime, if > 0, makes the access token expire and issues a
	// refresh token.
	TokenLifetime time.Duration
	// UserAgent is the client's User-Agent (kept with the last-seen address).
	UserAgent string
	// flags are the account's moderation flags, copied into the token.
	flags moderationFlags
}

// NewAccount describes an account to create.
type NewAccount struct {
	UserID   id.UserID
	Password string
	Guest    bool
	Admin    bool
	// DisplayName is the initial profile display name (the localpart if empty).
	DisplayName string
	// InhibitLogin creates no device and no token.
	InhibitLogin bool
	Login        LoginOptions
}

// Register creates the account and, unless inhibitLogin, its first device
// and token, in one transaction: a taken name is M_USER_IN_USE.
func (s *Service) Register(ctx context.Context, u id.UserID, password string, guest, inhibitLogin bool, lo LoginOptions) (*Session, error) {
	return s.CreateAccount(ctx, NewAccount{UserID: u, Password: password, Guest: guest, InhibitLogin: inhibitLogin, Login: lo})
}

// CreateAccount creates an account with its initial profile and, unless
// InhibitLogin, its first device and token, all in one transaction.
func (s *Service) CreateAccount(ctx context.Context, na NewAccount) (*Session, error) {
	u := na.UserID
	acct := Account{CreatedMS: s.now().UnixMilli(), Guest: na.Guest, Admin: na.Admin}
	if na.Password != "" {
		h, err := s.hash(na.Password)
		if err != nil {
			return nil, err
		}
		acct.PasswordHash = h
	}
	data, _ := json.Marshal(acct)
	ops := []table.Op{table.Put(table.Item{PK: accountKey(u).PK, SK: accountKey(u).SK, Data: data, Version: 1}, table.IfNotExists())}
	name := na.DisplayName
	if name == "" {
		name = u.Localpart()
	}
	prof := Profile{FieldDisplayName: mustJSON(name)}
	ops = append(ops, table.Put(profileItem(u, prof, 1), table.Cond{}))
	ops = append(ops, directoryOps(u, nil, false, prof, true)...) // directory.go
	var sess *Session
	if !na.InhibitLogin {
		var devOps []table.Op
		if na.Login.UserAgent == "" {
			na.Login.UserAgent = UserAgent(ctx)
		}
		sess, devOps = s.newLogin(u, na.Guest, na.Login, nil)
		ops = append(ops, devOps...)
	}
	err := s.T.Transact(ctx, ops)
	if failedAt(err) == 0 {
		return nil, httpapi.UserInUse("user ID already taken")
	}
	if err != nil {
		return nil, err
	}
	if sess == nil {
		sess = &Session{UserID: u}
	}
	return sess, nil
}

// failedAt is the index of the transaction operation whose condition
// failed, or -1.
func failedAt(err error) int {
	var txe *table.TxError
	if errors.As(err, &txe) {
		return txe.Index
	}
	return -1
}

func (s *Service) hash(password string) (string, error) {
	if len(password) > 72 {
		// bcrypt only reads 72 bytes; pre-hash longer passwords so every byte counts.
		sum := sha256.Sum256([]byte(password))
		password = base64.StdEncoding.EncodeToString(sum[:])
	}
	cost := s.BcryptCost
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	return string(h), err
}

func checkPassword(hash, password string) bool {
	if len(password) > 72 {
		sum := sha256.Sum256([]byte(password))
		password = base64.StdEncoding.EncodeToString(sum[:])
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
}

// Indexes of the operations newLogin returns.
const (
	loginOpToken  = 0
	loginOpDevice = 1
)

// newLogin builds the items of a new token for a device; old is the device's
// previous record if it exists (its token is revoked in the same
// transaction, and the device is only replaced if it is still at the
// version that was read).
func (s *Service) newLogin(u id.UserID, guest bool, lo LoginOptions, old *Device) (*Session, []table.Op) {
	now := s.now()
	dev := lo.DeviceID
	if dev == "" {
		dev = NewDeviceID()
	}
	tok := NewToken("syt_")
	tk := HashToken(tok)
	rec := tokenRecord{UserID: u, DeviceID: dev, Guest: guest, LastSeenMS: now.UnixMilli(),
		Suspended: lo.flags.Suspended, Locked: lo.flags.Locked}
	sess := &Session{UserID: u, DeviceID: dev, AccessToken: tok}
	tokItem := table.Item{PK: tokenKey(tk).PK, SK: "token"}
	d := Device{ID: dev, DisplayName: lo.DisplayName, TokenKey: tk, CreatedMS: now.UnixMilli(), LastSeenMS: now.UnixMilli(), LastSeenIP: lo.IP,
		LastSeenUserAgent: lo.UserAgent}
	devCond, devVersion := table.IfNotExists(), int64(1)
	if old != nil {
		d.CreatedMS = old.CreatedMS
		if d.DisplayName == "" {
			d.DisplayName = old.DisplayName
		}
		if d.LastSeenIP == "" {
			d.LastSeenIP = old.LastSeenIP
		}
		devCond, devVersion = table.IfVersion(old.Version), old.Version+1
	}
	if lo.TokenLifetime > 0 {
		exp := now.Add(lo.TokenLifetime)
		rec.ExpiresMS = exp.UnixMilli()
		tokItem.TTL = exp.Add(time.Hour).Unix() // kept a little longer so expiry is reported as such
		sess.ExpiresInMS = lo.TokenLifetime.Milliseconds()
		sess.RefreshToken = NewToken("syr_")
		d.RefreshKey = HashToken(sess.RefreshToken)
		d.TokenExpires = rec.ExpiresMS
	}
	tokItem.Data, _ = json.Marshal(rec)
	devData, _ := json.Marshal(d)
	dk := deviceKey(u, dev)
	ops := []table.Op{
		loginOpToken:  table.Put(tokItem, table.IfNotExists()),
		loginOpDevice: table.Put(table.Item{PK: dk.PK, SK: dk.SK, Data: devData, Version: devVersion}, devCond),
	}
	if old != nil && old.TokenKey != "" {
		ops = append(ops, table.Delete(tokenKey(old.TokenKey), table.Cond{}))
	}
	if d.RefreshKey != "" {
		rk := table.Key{PK: "refresh#" + d.RefreshKey, SK: "refresh"}
		rdata, _ := json.Marshal(tokenRecord{UserID: u, DeviceID: dev, Guest: guest})
		ops = append(ops, table.Put(table.Item{PK: rk.PK, SK: rk.SK, Data: rdata}, table.IfNotExists()))
	}
	if old != nil && old.RefreshKey != "" {
		ops = append(ops, table.Delete(table.Key{PK: "refresh#" + old.RefreshKey, SK: "refresh"}, table.Cond{}))
	}
	return sess, ops
}

// VerifyPassword checks a user's password without looking at whether the
// account is deactivated; any failure is the same M_FORBIDDEN so that it
// does not reveal which users exist.
func (s *Service) VerifyPassword(ctx context.Context, u id.UserID, password string) (*Account, error) {
	a, err := s.GetAccount(ctx, u)
	var he *httpapi.Error
	if errors.As(err, &he) {
		return nil, httpapi.Forbidden("invalid username or password")
	}
	if err != nil {
		return nil, err
	}
	if a.PasswordHash == "" || !checkPassword(a.PasswordHash, password) {
		return nil, httpapi.Forbidden("invalid username or password")
	}
	return a, nil
}

// CheckPassword verifies a user's password for a login: a deactivated
// account is M_USER_DEACTIVATED (after the password matched).
func (s *Service) CheckPassword(ctx context.Context, u id.UserID, password string) (*Account, error) {
	a, err := s.VerifyPassword(ctx, u, password)
	if err != nil {
		return nil, err
	}
	if a.Deactivated {
		return nil, httpapi.UserDeactivated("this account has been deactivated")
	}
	return a, nil
}

// Login issues a new access token on a device (an existing device id gets
// its old token revoked).
func (s *Service) Login(ctx context.Context, u id.UserID, guest bool, lo LoginOptions) (*Session, error) {
	if lo.UserAgent == "" {
		lo.UserAgent = UserAgent(ctx)
	}
	for range maxAttempts {
		check, err := s.loginFlags(ctx, u, &lo) // moderation.go: locked accounts get no token
		if err != nil {
			return nil, err
		}
		var old *Device
		if lo.DeviceID != "" {
			d, err := s.GetDevice(ctx, u, lo.DeviceID)
			if err == nil {
				old = d
			} else if !errors.Is(err, table.ErrNotFound) {
				return nil, err
			}
		}
		sess, ops := s.newLogin(u, guest, lo, old)
		ops = append(ops, check...)
		err = s.T.Transact(ctx, ops)
		if i := failedAt(err); i == loginOpDevice || (i >= 0 && ops[i].Target() == accountKey(u)) {
			continue // the device or the account's flags changed since they were read
		}
		if err != nil {
			return nil, err
		}
		return sess, nil
	}
	return nil, table.ErrConflict
}

func decodeDevice(it table.Item) (*Device, error) {
	var dev Device
	if err := json.Unmarshal(it.Data, &dev); err != nil {
		return nil, fmt.Errorf("device %s: %w", it.Key(), err)
	}
	dev.Version = it.Version
	return &dev, nil
}

func (s *Service) deviceItem(u id.UserID, d *Device, version int64) table.Item {
	k := deviceKey(u, d.ID)
	data, _ := json.Marshal(d)
	return table.Item{PK: k.PK, SK: k.SK, Data: data, Version: version}
}

// GetDevice loads one device (table.ErrNotFound if missing).
func (s *Service) GetDevice(ctx context.Context, u id.UserID, d id.DeviceID) (*Device, error) {
	it, err := s.T.Get(ctx, deviceKey(u, d))
	if err != nil {
		return nil, err
	}
	return decodeDevice(it)
}

// Devices lists a user's devices.
func (s *Service) Devices(ctx context.Context, u id.UserID) ([]Device, error) {
	var out []Device
	q := table.Query{PK: userPK(u), Prefix: "device#"}
	for {
		p, err := s.T.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, it := range p.Items {
			d, err := decodeDevice(it)
			if err != nil {
				return nil, err
			}
			out = append(out, *d)
		}
		if p.Next == "" {
			return out, nil
		}
		q.Cursor = p.Next
	}
}

// RenameDevice sets a device's display name (httpapi NotFound if the user
// has no such device).
func (s *Service) RenameDevice(ctx context.Context, u id.UserID, d id.DeviceID, name string) error {
	for range maxAttempts {
		dev, err := s.GetDevice(ctx, u, d)
		if errors.Is(err, table.ErrNotFound) {
			return httpapi.NotFound("no such device")
		}
		if err != nil {
			return err
		}
		if dev.DisplayName == name {
			return nil
		}
		dev.DisplayName = name
		err = s.T.Put(ctx, s.deviceItem(u, dev, dev.Version+1), table.IfVersion(dev.Version))
		if errors.Is(err, table.ErrConditionFailed) {
			continue
		}
		return err
	}
	return table.ErrConflict
}

// Authenticate implements httpapi.Authenticator with one table read; about
// once per LastSeenInterval per token it also records the device's last-seen
// time and address (see touch).
func (s *Service) Authenticate(ctx context.Context, token string) (*httpapi.Caller, error) {
	tk := HashToken(token)
	it, err := s.T.Get(ctx, tokenKey(tk))
	if errors.Is(err, table.ErrNotFound) {
		return nil, httpapi.UnknownToken("unknown access token")
	}
	if err != nil {
		return nil, err
	}
	var rec tokenRecord
	if err := json.Unmarshal(it.Data, &rec); err != nil {
		return nil, err
	}
	now := s.now()
	if rec.ExpiresMS != 0 && rec.ExpiresMS <= now.UnixMilli() {
		return nil, httpapi.UnknownToken("access token has expired").With("soft_logout", true)
	}
	if now.UnixMilli()-rec.LastSeenMS >= LastSeenInterval.Milliseconds() {
		s.touch(ctx, it, rec, tk, now)
	}
	return &httpapi.Caller{UserID: rec.UserID, DeviceID: rec.DeviceID, IsGuest: rec.Guest, TokenKey: tk,
		Suspended: rec.Suspended, Locked: rec.Locked}, nil
}

// touch writes the device's last-seen time and address, and the token's
// note of when that was done, in one transaction guarded by both items'
// versions: of several concurrent requests only one writes, and a device
// logged out meanwhile is not brought back. It is best effort: a failure
// leaves the old values, and a later request tries again.
func (s *Service) touch(ctx context.Context, tokItem table.Item, rec tokenRecord, tk string, now time.Time) {
	dev, err := s.GetDevice(ctx, rec.UserID, rec.DeviceID)
	if err != nil || dev.TokenKey != tk {
		return
	}
	rec.LastSeenMS = now.UnixMilli()
	dev.LastSeenMS = now.UnixMilli()
	if ip := ClientIP(ctx); ip != "" {
		dev.LastSeenIP = ip
		dev.LastSeenUserAgent = UserAgent(ctx)
	}
	oldTokVersion := tokItem.Version
	tokItem.Data, _ = json.Marshal(rec)
	tokItem.Version = oldTokVersion + 1
	_ = s.T.Transact(ctx, []table.Op{
		table.Put(tokItem, table.IfVersion(oldTokVersion)),
		table.Put(s.deviceItem(rec.UserID, dev, dev.Version+1), table.IfVersion(dev.Version)),
	})
}

type clientIPKey struct{}

// WithClientIP returns a context that carries the address a request came
// from, for the last-seen address of devices.
func WithClientIP(ctx context.Context, ip string) context.Context {
	return context.WithValue(ctx, clientIPKey{}, ip)
}

// ClientIP is the address WithClientIP stored ("" if none).
func ClientIP(ctx context.Context) string {
	ip, _ := ctx.Value(clientIPKey{}).(string)
	return ip
}

// DeleteDevice removes a device and revokes its tokens. A device that does
// not exist is not an error.
func (s *Service) DeleteDevice(ctx context.Context, u id.UserID, d id.DeviceID) error {
	for range maxAttempts {
		dev, err := s.GetDevice(ctx, u, d)
		if errors.Is(err, table.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		err = s.T.Transact(ctx, deleteDeviceOps(u, dev))
		if errors.Is(err, table.ErrConditionFailed) {
			continue // a new login on this device id, a rename…: read it again
		}
		return err
	}
	return table.ErrConflict
}

// deleteDeviceOps deletes a device as it was read (its version) with the
// tokens it names: had a login replaced its token since, the delete fails
// rather than leave that new token working without its device.
func deleteDeviceOps(u id.UserID, dev *Device) []table.Op {
	ops := []table.Op{table.Delete(deviceKey(u, dev.ID), table.IfVersion(dev.Version))}
	if dev.TokenKey != "" {
		ops = append(ops, table.Delete(tokenKey(dev.TokenKey), table.Cond{}))
	}
	if dev.RefreshKey != "" {
		ops = append(ops, table.Delete(table.Key{PK: "refresh#" + dev.RefreshKey, SK: "refresh"}, table.Cond{}))
	}
	return ops
}

// DeleteDevices removes the listed devices of the user (missing ones are
// skipped), revoking their tokens.
func (s *Service) DeleteDevices(ctx context.Context, u id.UserID, ids []id.DeviceID) error {
	want := make(map[id.DeviceID]bool, len(ids))
	for _, d := range ids {
		want[d] = true
	}
	return s.deleteDevicesWhere(ctx, u, func(d id.DeviceID) bool { return want[d] })
}

// DeleteAllDevices removes every device of the user (all tokens revoked),
// except keep if it is not empty.
func (s *Service) DeleteAllDevices(ctx context.Context, u id.UserID, keep id.DeviceID) error {
	return s.deleteDevicesWhere(ctx, u, func(d id.DeviceID) bool { return d != keep })
}

func (s *Service) deleteDevicesWhere(ctx context.Context, u id.UserID, match func(id.DeviceID) bool) error {
	for range maxAttempts {
		devs, err := s.Devices(ctx, u)
		if err != nil {
			return err
		}
		err = s.deleteBatched(ctx, u, devs, match)
		if errors.Is(err, table.ErrConditionFailed) {
			continue // some device changed: list again (deleted ones are gone)
		}
		return err
	}
	return table.ErrConflict
}

func (s *Service) deleteBatched(ctx context.Context, u id.UserID, devs []Device, match func(id.DeviceID) bool) error {
	var ops []table.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		err := s.T.Transact(ctx, ops)
		ops = ops[:0]
		return err
	}
	for i := range devs {
		if !match(devs[i].ID) {
			continue
		}
		more := deleteDeviceOps(u, &devs[i])
		if len(ops)+len(more) > table.MaxTxItems {
			if err := flush(); err != nil {
				return err
			}
		}
		ops = append(ops, more...)
	}
	return flush()
}

// Refresh exchanges a refresh token for a new access token (and a new
// refresh token); the old ones stop working.
func (s *Service) Refresh(ctx context.Context, refreshToken string, lifetime time.Duration) (*Session, error) {
	rk := HashToken(refreshToken)
	it, err := s.T.Get(ctx, table.Key{PK: "refresh#" + rk, SK: "refresh"})
	if errors.Is(err, table.ErrNotFound) {
		return nil, httpapi.UnknownToken("unknown refresh token")
	}
	if err != nil {
		return nil, err
	}
	var rec tokenRecord
	if err := json.Unmarshal(it.Data, &rec); err != nil {
		return nil, err
	}
	for range maxAttempts {
		old, err := s.GetDevice(ctx, rec.UserID, rec.DeviceID)
		if err != nil || old.RefreshKey != rk {
			return nil, httpapi.UnknownToken("unknown refresh token")
		}
		lo := LoginOptions{DeviceID: rec.DeviceID, TokenLifetime: lifetime}
		check, err := s.loginFlags(ctx, rec.UserID, &lo) // moderation.go
		if err != nil {
			return nil, err
		}
		sess, ops := s.newLogin(rec.UserID, rec.Guest, lo, old)
		ops = append(ops, check...)
		// Guard against two concurrent refreshes of the same token both winning:
		// only the one that still finds the old refresh token may delete it.
		for i := range ops {
			if ops[i].Kind == table.OpDelete && ops[i].Key.PK == "refresh#"+rk {
				ops[i].Cond = table.IfExists()
			}
		}
		err = s.T.Transact(ctx, ops)
		if i := failedAt(err); i == loginOpDevice || (i >= 0 && ops[i].Target() == accountKey(rec.UserID)) {
			continue // the device (last seen, rename) or the account's flags changed: read again
		}
		if err != nil {
			if errors.Is(err, table.ErrConditionFailed) {
				return nil, httpapi.UnknownToken("refresh token already used")
			}
			return nil, err
		}
		return sess, nil
	}
	return nil, table.ErrConflict
}

// getAccountItem loads an account with its item version.
func (s *Service) getAccountItem(ctx context.Context, u id.UserID) (*Account, int64, error) {
	it, err := s.T.Get(ctx, accountKey(u))
	if errors.Is(err, table.ErrNotFound) {
		return nil, 0, httpapi.NotFound("no such user")
	}
	if err != nil {
		return nil, 0, err
	}
	var a Account
	if err := json.Unmarshal(it.Data, &a); err != nil {
		return nil, 0, fmt.Errorf("account %s: %w", u, err)
	}
	return &a, it.Version, nil
}

// updateAccount applies change to the account with a conditional write,
// re-reading and retrying if another writer got there first.
func (s *Service) updateAccount(ctx context.Context, u id.UserID, change func(*Account) error) error {
	for range maxAttempts {
		a, v, err := s.getAccountItem(ctx, u)
		if err != nil {
			return err
		}
		if err := change(a); err != nil {
			return err
		}
		data, _ := json.Marshal(a)
		k := accountKey(u)
		err = s.T.Put(ctx, table.Item{PK: k.PK, SK: k.SK, Data: data, Version: v + 1}, table.IfVersion(v))
		if errors.Is(err, table.ErrConditionFailed) {
			continue
		}
		return err
	}
	return table.ErrConflict
}

// SetPassword replaces the user's password.
func (s *Service) SetPassword(ctx context.Context, u id.UserID, password string) error {
	h, err := s.hash(password)
	if err != nil {
		return err
	}
	return s.updateAccount(ctx, u, func(a *Account) error {
		a.PasswordHash = h
		return nil
	})
}

// Deactivate marks the account deactivated: it can no longer log in, and
// its name stays taken; it leaves the user directory. Callers revoke the
// devices separately.
func (s *Service) Deactivate(ctx context.Context, u id.UserID) error {
	err := s.updateAccount(ctx, u, func(a *Account) error {
		a.Deactivated = true
		return nil
	})
	if err != nil {
		return err
	}
	return s.reindexDirectory(ctx, u)
}
