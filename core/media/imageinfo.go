package media

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"io"
	"mime"
	"strings"

	// Decoders for the formats Cirrus thumbnails.
	_ "image/gif"
	_ "image/jpeg"
	_ "image/png"

	_ "golang.org/x/image/webp"
)

// ImageInfo is what an image's header says, recorded at upload so that
// thumbnail requests can be planned without reading the bytes.
type ImageInfo struct {
	// Format is the decoder's name: jpeg, png, gif or webp.
	Format string `json:"format"`
	Width  int    `json:"w"`
	Height int    `json:"h"`
	// Animated is true for GIFs with more than one frame, APNGs and
	// animated WebPs.
	Animated bool `json:"animated,omitempty"`
	// Frames is a GIF's frame count.
	Frames int `json:"frames,omitempty"`
}

// ContentType is the format's media type.
func (i *ImageInfo) ContentType() string { return "image/" + i.Format }

// baseType returns the lower-case media type of a Content-Type value,
// without parameters.
func baseType(ct string) string {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		mt, _, _ = strings.Cut(ct, ";")
	}
	return strings.ToLower(strings.TrimSpace(mt))
}

// thumbnailTypes are the uploaded content types Cirrus makes thumbnails of.
var thumbnailTypes = map[string]bool{
	"image/jpeg": true, "image/jpg": true, "image/pjpeg": true,
	"image/png": true, "image/apng": true,
	"image/gif":  true,
	"image/webp": true,
}

func isImageType(ct string) bool { return thumbnailTypes[baseType(ct)] }

// probeImage reads an image's header (never its pixels): format, size and
// whether it is animated. Formats other than jpeg, png, gif and webp fail.
func probeImage(r io.ReadSeeker) (*ImageInfo, error) {
	cfg, format, err := safeDecodeConfig(bufio.NewReader(r))
	if err != nil {
		return nil, err
	}
	info := &ImageInfo{Format: format, Width: cfg.Width, Height: cfg.Height}
	if info.Width <= 0 || info.Height <= 0 {
		return nil, errors.New("image has no pixels")
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(r, 32<<10)
	switch format {
	case "gif":
		n, err := countGIFFrames(br)
		if err != nil {
			return nil, err
		}
		info.Frames, info.Animated = n, n > 1
	case "png":
		info.Animated = isAPNG(br)
	case "webp":
		info.Animated = isAnimatedWebP(br)
	case "jpeg":
	default:
		return nil, fmt.Errorf("unsupported image format %q", format)
	}
	return info, nil
}

// safeDecodeConfig is image.DecodeConfig that turns a decoder panic into an error.
func safeDecodeConfig(r io.Reader) (cfg image.Config, format string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("image header: decoder failed: %v", p)
		}
	}()
	return image.DecodeConfig(r)
}

// countGIFFrames walks a GIF's blocks without decoding pixels and counts its
// images. It bounds the work an animated thumbnail will do.
func countGIFFrames(r *bufio.Reader) (int, error) {
	var hdr [13]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, err
	}
	if !bytes.HasPrefix(hdr[:], []byte("GIF8")) {
		return 0, errors.New("not a GIF")
	}
	if hdr[10]&0x80 != 0 { // global colour table
		if _, err := r.Discard(3 << (int(hdr[10]&7) + 1)); err != nil {
			return 0, err
		}
	}
	frames := 0
	for {
		b, err := r.ReadByte()
		if err != nil {
			return frames, errors.New("GIF ends without a trailer")
		}
		switch b {
		case 0x3b: // trailer
			return frames, nil
		case 0x21: // extension: label, then data sub-blocks
			if _, err := r.ReadByte(); err != nil {
				return frames, err
			}
			if err := skipSubBlocks(r); err != nil {
				return frames, err
			}
		case 0x2c: // image descriptor
			var d [9]byte
			if _, err := io.ReadFull(r, d[:]); err != nil {
				return frames, err
			}
			if d[8]&0x80 != 0 { // local colour table
				if _, err := r.Discard(3 << (int(d[8]&7) + 1)); err != nil {
					return frames, err
				}
			}
			if _, err := r.ReadByte(); err != nil { // LZW minimum code size
				return frames, err
			}
			if err := skipSubBlocks(r); err != nil {
				return frames, err
			}
			frames++
		default:
			return frames, fmt.Errorf("GIF: unknown block 0x%02x", b)
		}
	}
}

func skipSubBlocks(r *bufio.Reader) error {
	for {
		n, err := r.ReadByte()
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if _, err := r.Discard(int(n)); err != nil {
			return err
		}
	}
}

// isAPNG reports whether a PNG has an animation control chunk (acTL) before
// its image data.
func isAPNG(r *bufio.Reader) bool {
	if _, err := r.Discard(8); err != nil {
		return false
	}
	var h [8]byte
	for range 64 {
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return false
		}
		n := binary.BigEndian.Uint32(h[:4])
		switch string(h[4:8]) {
		case "acTL":
			return true
		case "IDAT", "IEND":
			return false
		}
		if n > 1<<24 {
			return false
		}
		if _, err := r.Discard(int(n) + 4); err != nil {
			return false
		}
	}
	return false
}

// isAnimatedWebP reports whether a WebP's extended header has the animation flag.
func isAnimatedWebP(r *bufio.Reader) bool {
	b, err := r.Peek(21)
	if err != nil || string(b[12:16]) != "VP8X" {
		return false
	}
	return b[20]&0x02 != 0
}
