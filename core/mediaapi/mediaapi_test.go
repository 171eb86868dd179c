package mediaapi

import "testing"

func TestContentDisposition(t *testing.T) {
	cases := []struct {
		ct, name string
		thumb    bool
		want     string
	}{
		{"image/png", "", false, "inline"},
		{"image/PNG; charset=x", "a.png", false, `inline; filename="a.png"`},
		{"text/plain; charset=utf-8", "notes.txt", false, `inline; filename="notes.txt"`},
		{"text/html", "page.html", false, `attachment; filename="page.html"`},
		{"image/svg+xml", "x.svg", false, `attachment; filename="x.svg"`},
		{"application/pdf", "", false, "attachment"},
		{"application/octet-stream", `we"ird\name`, false, `attachment; filename="we\"ird\\name"`},
		{"video/mp4", "été.mp4", false, "inline; filename*=utf-8''%C3%A9t%C3%A9.mp4"},
		{"not a type", "x", false, `attachment; filename="x"`},
		{"image/png", "thumbnail.png", true, `inline; filename="thumbnail.png"`},
	}
	for _, c := range cases {
		if got := ContentDisposition(c.ct, c.name, c.thumb); got != c.want {
			t.Errorf("ContentDisposition(%q, %q) = %s, want %s", c.ct, c.name, got, c.want)
		}
	}
}
