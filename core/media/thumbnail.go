package media

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"net/http"

	"golang.org/x/image/draw"

	"github.com/cirrus-matrix/cirrus/core/blob"
	"github.com/cirrus-matrix/cirrus/core/httpapi"
)

// Thumbnail methods.
const (
	MethodCrop  = "crop"
	MethodScale = "scale"
)

// Box is one thumbnail size Cirrus makes.
type Box struct {
	W, H   int
	Method string
}

// Boxes are the sizes the spec recommends; every request is answered with
// one of them (cached after the first time), which bounds the thumbnails
// one image can cost.
var Boxes = []Box{
	{32, 32, MethodCrop},
	{96, 96, MethodCrop},
	{320, 240, MethodScale},
	{640, 480, MethodScale},
	{800, 600, MethodScale},
}

// ChooseBox picks the box for a request: the smallest box of the requested
// method that is at least as large as asked in both directions, else the
// smallest such box of the other method, else the largest box. The spec
// wants thumbnails no smaller than requested wherever possible.
func ChooseBox(w, h int, method string) Box {
	for pass := range 2 {
		var best *Box
		for i := range Boxes {
			b := &Boxes[i]
			if pass == 0 && b.Method != method {
				continue
			}
			if b.W >= w && b.H >= h && (best == nil || b.W*b.H < best.W*best.H) {
				best = b
			}
		}
		if best != nil {
			return *best
		}
	}
	return Boxes[len(Boxes)-1]
}

var (
	errCannotThumbnail = &httpapi.Error{Status: http.StatusBadRequest, Code: "M_UNKNOWN",
		Message: "cannot generate thumbnails for the requested content"}
	errCorruptImage = &httpapi.Error{Status: http.StatusBadRequest, Code: "M_UNKNOWN",
		Message: "cannot generate thumbnails for the requested content: the image could not be decoded"}
)

func errThumbTooLarge() *httpapi.Error {
	return httpapi.TooLarge("content is too large to thumbnail")
}

func extension(format string) string {
	if format == "jpeg" {
		return "jpg"
	}
	return format
}

// Thumbnailable reports whether Cirrus can make thumbnails of r: a ready
// image whose header was read at upload (or when cached) in a format it
// decodes, within the decoding limit.
func (s *Service) Thumbnailable(r *Record) bool {
	info := r.Image
	if r.State != StateReady || info == nil || !isImageType(r.ContentType) {
		return false
	}
	switch info.Format {
	case "jpeg", "png", "gif", "webp":
	default:
		return false
	}
	return int64(info.Width)*int64(info.Height) <= s.cfg.MaxThumbnailPixels
}

// Thumbnail returns a thumbnail of r for a request of w×h by method. When
// the image already fits the chosen box, the original is the thumbnail
// (Cirrus never scales up). An animated thumbnail is made only when asked
// for (and only of GIFs); otherwise animated images give their first frame.
func (s *Service) Thumbnail(ctx context.Context, r *Record, w, h int, method string, animated bool) (*Content, error) {
	info := r.Image
	if info == nil || !isImageType(r.ContentType) {
		return nil, errCannotThumbnail
	}
	b := ChooseBox(w, h, method)
	if info.Width <= b.W && info.Height <= b.H && (!info.Animated || animated) {
		c := s.Download(r)
		c.ContentType = info.ContentType()
		c.Filename = "thumbnail." + extension(info.Format)
		return c, nil
	}
	pixels := int64(info.Width) * int64(info.Height)
	if pixels > s.cfg.MaxThumbnailPixels {
		return nil, errThumbTooLarge()
	}
	anim := animated && info.Animated && info.Format == "gif" && int64(info.Frames)*pixels <= s.cfg.MaxThumbnailPixels
	name := fmt.Sprintf("%s-%dx%d", b.Method, b.W, b.H)
	if anim {
		name += "-animated"
	}
	key := "thumb/" + r.SHA256 + "/" + name
	etag := `"` + r.SHA256 + "-" + name + `"`

	rc, bi, err := s.blobs.Get(ctx, key)
	if err == nil {
		return &Content{Key: key, Body: rc, Size: bi.Size, ContentType: bi.ContentType, Filename: thumbName(bi.ContentType), ETag: etag}, nil
	}
	if !errors.Is(err, blob.ErrNotFound) {
		return nil, err
	}
	data, ct, err := s.makeThumbnail(ctx, r, b, anim)
	if err != nil {
		return nil, err
	}
	if err := s.blobs.Put(ctx, key, bytes.NewReader(data), int64(len(data)), ct); err != nil {
		// Still answer; the next request makes it again.
		s.log.Warn("media: could not cache a thumbnail", "key", key, "err", err)
	}
	return &Content{Data: data, Size: int64(len(data)), ContentType: ct, Filename: thumbName(ct), ETag: etag}, nil
}

func thumbName(ct string) string {
	switch ct {
	case "image/jpeg":
		return "thumbnail.jpg"
	case "image/gif":
		return "thumbnail.gif"
	}
	return "thumbnail.png"
}

// makeThumbnail decodes the original (bounded by the pixel limit) and
// encodes the thumbnail: JPEG for JPEG sources, GIF for animated ones, PNG
// for the rest (it keeps transparency).
func (s *Service) makeThumbnail(ctx context.Context, r *Record, b Box, anim bool) (data []byte, ct string, err error) {
	rc, _, err := s.blobs.Get(ctx, r.Blob)
	if err != nil {
		return nil, "", err
	}
	defer rc.Close()
	// A decoder bug must not take the process down with it.
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("media: image decoder panicked", "media", r.MXC(), "panic", fmt.Sprint(p))
			data, ct, err = nil, "", errCorruptImage
		}
	}()
	src := bufio.NewReaderSize(io.LimitReader(rc, r.Size), 64<<10)
	var buf bytes.Buffer
	if anim {
		if err := animatedGIF(&buf, src, b); err != nil {
			return nil, "", err
		}
		return buf.Bytes(), "image/gif", nil
	}
	img, format, err := DecodeBounded(src, s.cfg.MaxThumbnailPixels)
	if err != nil {
		return nil, "", err
	}
	out := Resize(img, b)
	if format == "jpeg" {
		err, ct = jpeg.Encode(&buf, out, &jpeg.Options{Quality: 85}), "image/jpeg"
	} else {
		err, ct = (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, out), "image/png"
	}
	if err != nil {
		return nil, "", err
	}
	return buf.Bytes(), ct, nil
}

// DecodeBounded decodes an image (its first frame) after checking from its
// header that it is jpeg, png, gif or webp and at most maxPixels large: a
// small file cannot make Cirrus allocate a huge canvas. Broken images give
// a 400 M_UNKNOWN error, too large ones 413 M_TOO_LARGE.
func DecodeBounded(r io.Reader, maxPixels int64) (image.Image, string, error) {
	var head bytes.Buffer
	cfg, format, err := safeDecodeConfig(io.TeeReader(r, &head))
	if err != nil {
		return nil, "", errCorruptImage
	}
	switch format {
	case "jpeg", "png", "gif", "webp":
	default:
		return nil, "", errCannotThumbnail
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, "", errCorruptImage
	}
	if int64(cfg.Width)*int64(cfg.Height) > maxPixels {
		return nil, "", errThumbTooLarge()
	}
	img, _, err := image.Decode(io.MultiReader(&head, r))
	if err != nil {
		return nil, "", errCorruptImage
	}
	// A GIF's first frame may cover only part of its canvas.
	if canvas := image.Rect(0, 0, cfg.Width, cfg.Height); img.Bounds() != canvas {
		full := image.NewNRGBA(canvas)
		draw.Draw(full, img.Bounds().Intersect(canvas), img, img.Bounds().Min, draw.Src)
		img = full
	}
	return img, format, nil
}

// plan works out which part of a sw×sh image a box keeps and the size it
// is drawn at. "crop" keeps the centre part with the box's aspect ratio and
// scales it to the box; "scale" keeps everything and fits it inside the
// box. Neither ever scales up: a part smaller than the box stays its size.
func plan(sw, sh int, b Box) (src image.Rectangle, dw, dh int) {
	src = image.Rect(0, 0, sw, sh)
	if sw <= b.W && sh <= b.H {
		return src, sw, sh
	}
	if b.Method == MethodCrop {
		cw, ch := sw, sh
		if sw*b.H > sh*b.W {
			cw = max(1, (sh*b.W+b.H/2)/b.H)
		} else {
			ch = max(1, (sw*b.H+b.W/2)/b.W)
		}
		x0, y0 := (sw-cw)/2, (sh-ch)/2
		src = image.Rect(x0, y0, x0+cw, y0+ch)
		if cw <= b.W || ch <= b.H {
			return src, cw, ch
		}
		return src, b.W, b.H
	}
	if sw*b.H > sh*b.W {
		return src, b.W, max(1, (sh*b.W+sw/2)/sw)
	}
	return src, max(1, (sw*b.H+sh/2)/sh), b.H
}

// Resize makes the thumbnail of img for box b (see plan).
func Resize(img image.Image, b Box) image.Image {
	sb := img.Bounds()
	src, dw, dh := plan(sb.Dx(), sb.Dy(), b)
	src = src.Add(sb.Min)
	if src == sb && dw == sb.Dx() && dh == sb.Dy() {
		return img
	}
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	if dw == src.Dx() && dh == src.Dy() {
		draw.Draw(dst, dst.Bounds(), img, src.Min, draw.Src)
		return dst
	}
	if src.Dx() > 4*dw && src.Dy() > 4*dh {
		// CatmullRom keeps a float64 buffer of dst width × src height ×
		// 4 channels (150 MB for a tall photo): bring big sources down to
		// twice the size first with a cheap filter that needs none.
		mid := image.NewRGBA(image.Rect(0, 0, 2*dw, 2*dh))
		draw.ApproxBiLinear.Scale(mid, mid.Bounds(), img, src, draw.Src, nil)
		img, src = mid, mid.Bounds()
	}
	draw.CatmullRom.Scale(dst, dst.Bounds(), img, src, draw.Src, nil)
	return dst
}

// animatedGIF writes a scaled copy of an animated GIF: each frame is
// composed onto the canvas as a viewer would (honouring disposal), the
// canvas is scaled, and the result mapped back to the frame's palette.
// The caller has checked frames × canvas pixels against the pixel limit.
func animatedGIF(w io.Writer, r io.Reader, b Box) error {
	g, err := gif.DecodeAll(r)
	if err != nil || len(g.Image) == 0 {
		return errCorruptImage
	}
	sw, sh := g.Config.Width, g.Config.Height
	if sw <= 0 || sh <= 0 {
		return errCorruptImage
	}
	src, dw, dh := plan(sw, sh, b)
	canvas := image.NewRGBA(image.Rect(0, 0, sw, sh))
	out := &gif.GIF{LoopCount: g.LoopCount, Config: image.Config{Width: dw, Height: dh}}
	for i, fr := range g.Image {
		disposal := byte(gif.DisposalNone)
		if i < len(g.Disposal) {
			disposal = g.Disposal[i]
		}
		var saved *image.RGBA
		if disposal == gif.DisposalPrevious {
			saved = image.NewRGBA(canvas.Rect)
			copy(saved.Pix, canvas.Pix)
		}
		draw.Draw(canvas, fr.Bounds(), fr, fr.Bounds().Min, draw.Over)

		scaled := image.NewRGBA(image.Rect(0, 0, dw, dh))
		if dw == src.Dx() && dh == src.Dy() {
			draw.Draw(scaled, scaled.Bounds(), canvas, src.Min, draw.Src)
		} else {
			draw.ApproxBiLinear.Scale(scaled, scaled.Bounds(), canvas, src, draw.Src, nil)
		}
		pal := withTransparent(fr.Palette)
		pm := image.NewPaletted(scaled.Bounds(), pal)
		draw.Draw(pm, pm.Bounds(), scaled, image.Point{}, draw.Src)
		out.Image = append(out.Image, pm)
		delay := 0
		if i < len(g.Delay) {
			delay = g.Delay[i]
		}
		out.Delay = append(out.Delay, delay)
		out.Disposal = append(out.Disposal, gif.DisposalNone)

		switch disposal {
		case gif.DisposalBackground:
			draw.Draw(canvas, fr.Bounds(), image.Transparent, image.Point{}, draw.Src)
		case gif.DisposalPrevious:
			canvas = saved
		}
	}
	return gif.EncodeAll(w, out)
}

// withTransparent returns p with a fully transparent colour, added if it
// has none and there is room.
func withTransparent(p color.Palette) color.Palette {
	for _, c := range p {
		if _, _, _, a := c.RGBA(); a == 0 {
			return p
		}
	}
	if len(p) >= 256 {
		return p
	}
	out := make(color.Palette, len(p), len(p)+1)
	copy(out, p)
	return append(out, color.RGBA{})
}
