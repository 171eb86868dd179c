package localfs

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/core/blob"
	"github.com/cirrus-matrix/cirrus/core/blob/blobtest"
)

func TestContract(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		s, err := New(filepath.Join(t.TempDir(), "media"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { checkNoTemps(t, s.Dir()) })
		return s
	})
}

// checkNoTemps fails if any temporary file survived under dir.
func checkNoTemps(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Errorf("walk %s: %v", p, err)
			return nil
		}
		if strings.Contains(d.Name(), "~tmp-") {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
}

func TestInvalidKeysStayInside(t *testing.T) {
	parent := t.TempDir()
	s, err := New(filepath.Join(parent, "media"))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"../escape", "/abs", "a/../../escape", "..", "x/../../../escape"} {
		if err := s.Put(t.Context(), key, strings.NewReader("x"), 1, "text/plain"); err == nil {
			t.Errorf("Put(%q) succeeded", key)
		}
	}
	entries, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "media" {
		t.Errorf("parent directory holds %v, want only media", entries)
	}
	// A file outside the store is not deletable through it.
	outside := filepath.Join(parent, "keep")
	if err := os.WriteFile(outside+dataSuffix, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(t.Context(), "../keep"); err == nil {
		t.Error("Delete(../keep) succeeded")
	}
	if _, err := os.Stat(outside + dataSuffix); err != nil {
		t.Errorf("file outside the store: %v", err)
	}
}

func TestLayout(t *testing.T) {
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(t.Context(), "a/b", strings.NewReader("hello"), 5, "text/plain"); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(s.Dir(), "a", "b"+dataSuffix))
	if err != nil || string(got) != "hello" {
		t.Fatalf("data file: %q, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "a", "b"+metaSuffix)); err != nil {
		t.Fatalf("meta file: %v", err)
	}
	if err := s.Delete(t.Context(), "a/b"); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Join(s.Dir(), "a"))
	if err != nil || len(entries) != 0 {
		t.Fatalf("after delete: %v, %v", entries, err)
	}
}

func TestNewOnFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(f); err == nil {
		t.Fatal("New on a regular file succeeded")
	}
}

func TestGetServesContent(t *testing.T) {
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789"), 1000)
	if err := s.Put(t.Context(), "m/x", bytes.NewReader(data), int64(len(data)), "image/png"); err != nil {
		t.Fatal(err)
	}
	rc, info, err := s.Get(t.Context(), "m/x")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, ok := rc.(*os.File); !ok {
		t.Fatalf("Get returned %T, want *os.File", rc)
	}
	rs, ok := rc.(io.ReadSeeker)
	if !ok {
		t.Fatalf("Get returned %T, not an io.ReadSeeker", rc)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/m/x", nil)
	req.Header.Set("Range", "bytes=10-19")
	rec.Header().Set("Content-Type", info.ContentType)
	http.ServeContent(rec, req, "", time.Time{}, rs)
	if rec.Code != http.StatusPartialContent || rec.Body.String() != "0123456789" {
		t.Fatalf("range request: %d %q", rec.Code, rec.Body.String())
	}
}

func TestCorruptMeta(t *testing.T) {
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(t.Context(), "k", strings.NewReader("x"), 1, "text/plain"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Dir(), "k"+metaSuffix), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Head(t.Context(), "k"); err == nil || errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Head with corrupt meta: %v, want a non-NotFound error", err)
	}
}
