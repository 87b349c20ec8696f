package proxy

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// chunkReader returns the stream in pieces whose sizes come from sizes
// (cycled), the way TCP segments arrive.
type chunkReader struct {
	b     []byte
	sizes []byte
	i     int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(c.sizes) > 0 {
		n = int(c.sizes[c.i%len(c.sizes)])%7 + 1
		c.i++
	}
	n = min(n, len(p), len(c.b))
	copy(p, c.b[:n])
	c.b = c.b[n:]
	return n, nil
}

// readAllFrames runs the incremental reader to the end.
func readAllFrames(r io.Reader, max int) ([][]byte, error) {
	fr := &tcpFrameReader{r: r}
	buf := make([]byte, tcpMaxFrame)
	alloc := func(n int) []byte { return buf[:n] }
	var out [][]byte
	for {
		p, err := fr.next(alloc, max)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, append([]byte(nil), p...))
	}
}

func TestTCPFraming(t *testing.T) {
	ikeFrame := appendTCPFrame(nil, append([]byte{0, 0, 0, 0}, bytes.Repeat([]byte{0xAA}, 28)...))
	espFrame := appendTCPFrame(nil, []byte{0, 0, 0x10, 0x01, 0, 0, 0, 1, 0xEE})
	cases := []struct {
		name   string
		stream []byte
		max    int
		frames int
		err    error
	}{
		{"prefix only", []byte("IKETCP"), 65533, 0, nil},
		{"IKE and ESP", append(append([]byte("IKETCP"), ikeFrame...), espFrame...), 65533, 2, nil},
		{"bad prefix", append([]byte("IKETCX"), ikeFrame...), 65533, 0, errTCPPrefix},
		{"short prefix", []byte("IKE"), 65533, 0, errTCPPrefix},
		{"length zero", []byte("IKETCP\x00\x00"), 65533, 0, errTCPShort},
		{"length five", []byte("IKETCP\x00\x05abc"), 65533, 0, errTCPShort},
		{"too long", append([]byte("IKETCP"), ikeFrame...), 20, 0, errTCPTooLong},
		{"truncated length", append(append([]byte("IKETCP"), ikeFrame...), 0x00), 65533, 1, errTCPTruncEOF},
		{"truncated payload", append([]byte("IKETCP"), ikeFrame[:10]...), 65533, 0, errTCPTruncEOF},
		{"64 KiB junk", append([]byte("IKETCP\xff\xff"), bytes.Repeat([]byte{0x5A}, 65533)...), 10000, 0, errTCPTooLong},
	}
	for _, c := range cases {
		got, err := readAllFrames(&chunkReader{b: c.stream, sizes: []byte{3, 1, 6}}, c.max)
		if len(got) != c.frames || !errors.Is(err, c.err) {
			t.Errorf("%s: %d frames, err %v; want %d, %v", c.name, len(got), err, c.frames, c.err)
		}
		ref, rerr := splitTCPStream(c.stream, c.max)
		if len(ref) != c.frames || !errors.Is(rerr, c.err) {
			t.Errorf("%s: reference %d frames, err %v; want %d, %v", c.name, len(ref), rerr, c.frames, c.err)
		}
	}
}

// FuzzTCPFraming: the incremental reader, fed in arbitrary pieces, agrees
// with the whole-stream decoder on every frame and on the error, and
// re-framing the frames gives the stream back.
func FuzzTCPFraming(f *testing.F) {
	f.Add([]byte("IKETCP\x00\x0a\x00\x00\x00\x00abcd"), []byte{1}, uint16(100))
	f.Add([]byte("IKETCP\x00\x06\x00\x00\x10\x01\x00\x02"), []byte{7, 2}, uint16(4))
	f.Add([]byte("IKETCP\xff\xff"), []byte{}, uint16(10000))
	f.Add([]byte("IKET"), []byte{3}, uint16(0))
	f.Fuzz(func(t *testing.T, stream, sizes []byte, max uint16) {
		want, werr := splitTCPStream(stream, int(max))
		got, gerr := readAllFrames(&chunkReader{b: stream, sizes: sizes}, int(max))
		if !errors.Is(gerr, werr) && !(werr == nil && gerr == nil) {
			t.Fatalf("reader error %v, reference %v", gerr, werr)
		}
		if len(got) != len(want) {
			t.Fatalf("reader %d frames, reference %d", len(got), len(want))
		}
		re := []byte(tcpPrefix)
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("frame %d differs", i)
			}
			if len(got[i]) < tcpMinPayload || len(got[i]) > int(max) {
				t.Fatalf("frame %d: %d bytes outside %d..%d", i, len(got[i]), tcpMinPayload, max)
			}
			re = appendTCPFrame(re, got[i])
		}
		if werr == nil && !bytes.Equal(re, stream) {
			t.Fatalf("re-framed stream differs")
		}
	})
}
