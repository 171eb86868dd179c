package media

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"testing"

	"github.com/cirrus-matrix/cirrus/core/httpapi"
	"github.com/cirrus-matrix/cirrus/core/media/mediatest"
)

func TestChooseBox(t *testing.T) {
	cases := []struct {
		w, h   int
		method string
		want   Box
	}{
		{1, 1, MethodCrop, Box{32, 32, MethodCrop}},
		{32, 32, MethodCrop, Box{32, 32, MethodCrop}},
		{33, 20, MethodCrop, Box{96, 96, MethodCrop}},
		{96, 96, MethodScale, Box{320, 240, MethodScale}},
		{320, 240, MethodScale, Box{320, 240, MethodScale}},
		{321, 240, MethodScale, Box{640, 480, MethodScale}},
		{800, 600, MethodScale, Box{800, 600, MethodScale}},
		{200, 200, MethodCrop, Box{320, 240, MethodScale}}, // no crop box is big enough
		{5000, 5000, MethodScale, Box{800, 600, MethodScale}},
		{5000, 5000, MethodCrop, Box{800, 600, MethodScale}},
		{10, 10, MethodScale, Box{320, 240, MethodScale}},
	}
	for _, c := range cases {
		if got := ChooseBox(c.w, c.h, c.method); got != c.want {
			t.Errorf("ChooseBox(%d, %d, %s) = %v, want %v", c.w, c.h, c.method, got, c.want)
		}
	}
}

func TestResizeDimensions(t *testing.T) {
	cases := []struct {
		sw, sh int
		box    Box
		w, h   int
	}{
		{1000, 500, Box{320, 240, MethodScale}, 320, 160},
		{500, 1000, Box{320, 240, MethodScale}, 120, 240},
		{300, 200, Box{320, 240, MethodScale}, 300, 200}, // fits: untouched
		{1000, 500, Box{96, 96, MethodCrop}, 96, 96},
		{1000, 50, Box{96, 96, MethodCrop}, 50, 50}, // crop only: never scaled up
		{90, 90, Box{96, 96, MethodCrop}, 90, 90},
		{4000, 3000, Box{800, 600, MethodScale}, 800, 600},
		{4000, 1, Box{800, 600, MethodScale}, 800, 1},
	}
	for _, c := range cases {
		out := Resize(mediatest.Gradient(c.sw, c.sh), c.box)
		if b := out.Bounds(); b.Dx() != c.w || b.Dy() != c.h {
			t.Errorf("%dx%d into %v: got %dx%d, want %dx%d", c.sw, c.sh, c.box, b.Dx(), b.Dy(), c.w, c.h)
		}
	}
}

// apng inserts an animation control chunk after a PNG's header chunk.
func apng(png []byte) []byte {
	const ihdrEnd = 8 + 8 + 13 + 4
	chunk := make([]byte, 8+8+4)
	binary.BigEndian.PutUint32(chunk, 8)
	copy(chunk[4:], "acTL")
	binary.BigEndian.PutUint32(chunk[8:], 2) // frames
	binary.BigEndian.PutUint32(chunk[16:], crc32.ChecksumIEEE(chunk[4:16]))
	out := append([]byte{}, png[:ihdrEnd]...)
	out = append(out, chunk...)
	return append(out, png[ihdrEnd:]...)
}

func TestProbeImage(t *testing.T) {
	cases := []struct {
		name   string
		data   []byte
		format string
		w, h   int
		anim   bool
		frames int
	}{
		{"png", mediatest.PNG(40, 30), "png", 40, 30, false, 0},
		{"apng", apng(mediatest.PNG(40, 30)), "png", 40, 30, true, 0},
		{"jpeg", mediatest.JPEG(50, 20), "jpeg", 50, 20, false, 0},
		{"gif still", mediatest.GIF(20, 10, 1), "gif", 20, 10, false, 1},
		{"gif animated", mediatest.GIF(20, 10, 3), "gif", 20, 10, true, 3},
		{"webp", mediatest.WebP(64, 48, color.NRGBA{1, 2, 3, 255}), "webp", 64, 48, false, 0},
	}
	for _, c := range cases {
		info, err := probeImage(bytes.NewReader(c.data))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if info.Format != c.format || info.Width != c.w || info.Height != c.h || info.Animated != c.anim || info.Frames != c.frames {
			t.Errorf("%s: %+v", c.name, info)
		}
	}
	for _, bad := range [][]byte{nil, []byte("hello"), mediatest.PNG(10, 10)[:20], []byte("GIF89a\x01\x00\x01\x00\x00\x00\x00\x99")} {
		if info, err := probeImage(bytes.NewReader(bad)); err == nil {
			t.Errorf("probe of %q: %+v, want an error", bad, info)
		}
	}
}

func wantStatus(t *testing.T, what string, err error, status int) {
	t.Helper()
	var he *httpapi.Error
	if !errors.As(err, &he) || he.Status != status {
		t.Fatalf("%s: got %v, want HTTP %d", what, err, status)
	}
}

func TestDecodeBounded(t *testing.T) {
	for name, data := range map[string][]byte{
		"png":  mediatest.PNG(120, 80),
		"jpeg": mediatest.JPEG(120, 80),
		"gif":  mediatest.GIF(120, 80, 2),
		"webp": mediatest.WebP(120, 80, color.NRGBA{200, 100, 50, 255}),
	} {
		img, format, err := DecodeBounded(bytes.NewReader(data), 1<<20)
		if err != nil || format != name || img.Bounds() != image.Rect(0, 0, 120, 80) {
			t.Fatalf("%s: %v %s %v", name, err, format, img)
		}
	}
	// Headers claiming too many pixels are refused before any pixel is decoded.
	bomb := mediatest.WebP(16384, 16384, color.NRGBA{A: 255})
	_, _, err := DecodeBounded(bytes.NewReader(bomb), 50_000_000)
	wantStatus(t, "pixel bomb", err, 413)
	_, _, err = DecodeBounded(bytes.NewReader(mediatest.PNG(100, 100)), 9999)
	wantStatus(t, "over the limit", err, 413)

	png := mediatest.PNG(64, 64)
	corrupt := append([]byte{}, png...)
	for i := 60; i < len(corrupt); i += 7 {
		corrupt[i] ^= 0x5a
	}
	for name, data := range map[string][]byte{
		"empty":      nil,
		"text":       []byte("definitely not an image"),
		"truncated":  png[:len(png)/2],
		"corrupt":    corrupt,
		"jpeg start": mediatest.JPEG(64, 64)[:200],
		"gif header": []byte("GIF89a\x10\x00\x10\x00\x00\x00\x00"),
	} {
		_, _, err := DecodeBounded(bytes.NewReader(data), 1<<20)
		wantStatus(t, name, err, 400)
	}
}

// Every prefix of a valid image must fail cleanly, never panic.
func TestDecodeTruncationsNeverPanic(t *testing.T) {
	for _, data := range [][]byte{mediatest.PNG(33, 17), mediatest.JPEG(33, 17), mediatest.GIF(33, 17, 3), mediatest.WebP(33, 17, color.NRGBA{A: 9})} {
		for n := 0; n < len(data); n += 1 + n/16 {
			_, _, _ = DecodeBounded(bytes.NewReader(data[:n]), 1<<20)
			_, _ = probeImage(bytes.NewReader(data[:n]))
		}
	}
}

func TestAnimatedGIF(t *testing.T) {
	var out bytes.Buffer
	if err := animatedGIF(&out, bytes.NewReader(mediatest.GIF(400, 300, 3)), Box{96, 96, MethodCrop}); err != nil {
		t.Fatal(err)
	}
	g, err := gif.DecodeAll(&out)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Image) != 3 || g.Config.Width != 96 || g.Config.Height != 96 {
		t.Fatalf("animated thumbnail: %d frames, %dx%d", len(g.Image), g.Config.Width, g.Config.Height)
	}
}
