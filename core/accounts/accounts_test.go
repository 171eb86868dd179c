package accounts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/core/table"
	"github.com/cirrus-matrix/cirrus/infra/bolt"
)

// clock is a settable time source shared by the service and the table.
type clock struct{ t atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *clock) advance(d time.Duration) { c.t.Add(int64(d)) }

func newService(t *testing.T) (*Service, *clock) {
	t.Helper()
	c := &clock{}
	c.t.Store(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	db, err := bolt.Open(filepath.Join(t.TempDir(), "cirrus.db"), bolt.WithClock(c.now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &Service{T: db.Table(), ServerName: "test.local", BcryptCost: 4, Now: c.now}, c
}

func register(t *testing.T, s *Service, local string) *Session {
	t.Helper()
	sess, err := s.Register(context.Background(), id.NewUserID(local, "test.local"), "pw", false, false, LoginOptions{IP: "192.0.2.1"})
	if err != nil {
		t.Fatal(err)
	}
	return sess
}

func TestLastSeenIsWrittenAtMostOncePerInterval(t *testing.T) {
	s, c := newService(t)
	ctx := context.Background()
	sess := register(t, s, "alice")
	dev0, err := s.GetDevice(ctx, sess.UserID, sess.DeviceID)
	if err != nil || dev0.LastSeenIP != "192.0.2.1" || dev0.LastSeenMS != c.now().UnixMilli() {
		t.Fatalf("device after registration: %+v %v", dev0, err)
	}
	ipCtx := WithClientIP(ctx, "198.51.100.7")

	// Within the interval: no write at all.
	c.advance(LastSeenInterval - time.Second)
	for range 5 {
		if _, err := s.Authenticate(ipCtx, sess.AccessToken); err != nil {
			t.Fatal(err)
		}
	}
	if d, _ := s.GetDevice(ctx, sess.UserID, sess.DeviceID); d.Version != dev0.Version || d.LastSeenIP != "192.0.2.1" {
		t.Fatalf("device written within the interval: %+v", d)
	}

	// Past it: one write, then quiet again.
	c.advance(2 * time.Second)
	want := c.now().UnixMilli()
	for range 5 {
		if _, err := s.Authenticate(ipCtx, sess.AccessToken); err != nil {
			t.Fatal(err)
		}
	}
	d, _ := s.GetDevice(ctx, sess.UserID, sess.DeviceID)
	if d.LastSeenMS != want || d.LastSeenIP != "198.51.100.7" || d.Version != dev0.Version+1 {
		t.Fatalf("device after the interval: %+v (was %+v)", d, dev0)
	}
}

func TestLastSeenConcurrentRequestsWriteOnce(t *testing.T) {
	s, c := newService(t)
	ctx := context.Background()
	sess := register(t, s, "alice")
	c.advance(LastSeenInterval + time.Second)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if _, err := s.Authenticate(ctx, sess.AccessToken); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	d, _ := s.GetDevice(ctx, sess.UserID, sess.DeviceID)
	if d.Version != 2 || d.LastSeenMS != c.now().UnixMilli() {
		t.Fatalf("want exactly one last-seen write, device %+v", d)
	}
}

func TestTouchDoesNotResurrectDeletedDevice(t *testing.T) {
	s, c := newService(t)
	ctx := context.Background()
	sess := register(t, s, "alice")
	tk := HashToken(sess.AccessToken)
	it, err := s.T.Get(ctx, tokenKey(tk))
	if err != nil {
		t.Fatal(err)
	}
	var rec tokenRecord
	_ = json.Unmarshal(it.Data, &rec)
	// The request read its token, then the device was logged out.
	if err := s.DeleteDevice(ctx, sess.UserID, sess.DeviceID); err != nil {
		t.Fatal(err)
	}
	s.touch(ctx, it, rec, tk, c.now())
	if _, err := s.T.Get(ctx, tokenKey(tk)); !errors.Is(err, table.ErrNotFound) {
		t.Fatalf("token back after touch: %v", err)
	}
	if _, err := s.GetDevice(ctx, sess.UserID, sess.DeviceID); !errors.Is(err, table.ErrNotFound) {
		t.Fatalf("device back after touch: %v", err)
	}
}

// Logins on one device id racing its deletion: afterwards every token that
// exists must belong to a device that names it.
func TestDeleteDeviceRacesLogin(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	sess := register(t, s, "alice")
	var tokens sync.Map
	for round := range 10 {
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				ls, err := s.Login(ctx, sess.UserID, false, LoginOptions{DeviceID: "SHARED"})
				if err != nil {
					t.Errorf("round %d login %d: %v", round, i, err)
					return
				}
				tokens.Store(ls.AccessToken, true)
			})
		}
		wg.Go(func() {
			if err := s.DeleteDevice(ctx, sess.UserID, "SHARED"); err != nil {
				t.Errorf("round %d delete: %v", round, err)
			}
		})
		wg.Wait()
	}
	dev, derr := s.GetDevice(ctx, sess.UserID, "SHARED")
	tokens.Range(func(k, _ any) bool {
		c, err := s.Authenticate(ctx, k.(string))
		if err != nil {
			return true
		}
		if derr != nil || c.TokenKey != dev.TokenKey {
			t.Errorf("token %s works but its device is %+v (%v)", c.TokenKey, dev, derr)
		}
		return true
	})
}

func TestLoginTokenSingleUse(t *testing.T) {
	s, c := newService(t)
	ctx := context.Background()
	u := id.UserID("@alice:test.local")
	tok, err := s.CreateLoginToken(ctx, u, LoginTokenLifetime)
	if err != nil {
		t.Fatal(err)
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			got, err := s.ConsumeLoginToken(ctx, tok)
			if err == nil {
				if got != u {
					t.Errorf("token for %s, want %s", got, u)
				}
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d uses of a single-use token succeeded", wins.Load())
	}
	// Expiry.
	tok, _ = s.CreateLoginToken(ctx, u, LoginTokenLifetime)
	c.advance(LoginTokenLifetime + time.Millisecond)
	if _, err := s.ConsumeLoginToken(ctx, tok); err == nil {
		t.Fatal("expired token accepted")
	}
}

func TestRegistrationNonceSingleUse(t *testing.T) {
	s, c := newService(t)
	ctx := context.Background()
	n, err := s.NewRegistrationNonce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if ok, err := s.ConsumeRegistrationNonce(ctx, n); err == nil && ok {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d uses of a nonce succeeded", wins.Load())
	}
	n, _ = s.NewRegistrationNonce(ctx)
	c.advance(RegistrationNonceLifetime + time.Second)
	if ok, _ := s.ConsumeRegistrationNonce(ctx, n); ok {
		t.Fatal("expired nonce accepted")
	}
}

func TestConcurrentProfileUpdatesAreNotLost(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	sess := register(t, s, "alice")
	var wg sync.WaitGroup
	var landed sync.Map
	for i := range 20 {
		wg.Go(func() {
			_, err := s.UpdateProfile(ctx, sess.UserID, func(p Profile) error {
				p[fmt.Sprintf("org.example.f%d", i)] = mustJSON(i)
				return nil
			})
			if err == nil {
				landed.Store(i, true)
			} else if !errors.Is(err, table.ErrConflict) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	up, err := s.GetProfile(ctx, sess.UserID)
	if err != nil || !up.Exists {
		t.Fatal(up, err)
	}
	if up.Fields.String(FieldDisplayName) != "alice" {
		t.Fatalf("initial display name lost: %v", up.Fields)
	}
	// A writer may give up after maxAttempts conflicts, but no write that
	// reported success may be lost.
	n := 0
	landed.Range(func(k, _ any) bool {
		n++
		if _, ok := up.Fields[fmt.Sprintf("org.example.f%d", k.(int))]; !ok {
			t.Errorf("update %d reported success but is gone", k)
		}
		return true
	})
	if n == 0 {
		t.Fatalf("no concurrent update landed: %v", up.Fields)
	}
}

func TestPasswordAndDeactivation(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	sess := register(t, s, "alice")
	if err := s.SetPassword(ctx, sess.UserID, "new"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CheckPassword(ctx, sess.UserID, "pw"); err == nil {
		t.Fatal("old password accepted")
	}
	if _, err := s.CheckPassword(ctx, sess.UserID, "new"); err != nil {
		t.Fatal(err)
	}
	if err := s.Deactivate(ctx, sess.UserID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CheckPassword(ctx, sess.UserID, "new"); err == nil || err.Error() == "" {
		t.Fatal("deactivated account can log in")
	}
	if _, err := s.VerifyPassword(ctx, sess.UserID, "new"); err != nil {
		t.Fatalf("VerifyPassword ignores deactivation: %v", err)
	}
}
