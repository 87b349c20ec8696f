package proxy

// RFC 9329 stream framing: what a TCP connection from a client carries.
//
//	stream  = "IKETCP" *frame          (the prefix is sent once, by the initiator, §4)
//	frame   = Length payload           (Length: 16 bits, counting itself, §3)
//	payload = 0x00000000 IKE-message   (the non-ESP marker, §3.1)
//	        / ESP-packet               (a non-zero SPI, §3.2)
//
// After the length field a frame's payload is exactly what a UDP datagram
// on the NAT-T port carries (RFC 3948), so the proxy relays it unchanged
// as ESP-in-UDP or marked IKE to the backend's NAT-T port, and frames the
// backend's datagrams back the same way. NAT-T keepalives have no place on
// a stream (§3: TCP keeps the NAT mapping alive); the backend's are not
// framed.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// tcpPrefix opens every RFC 9329 stream (§4: "IKETCP", 0x494B45544350).
const tcpPrefix = "IKETCP"

// tcpLenField is the size of a frame's Length field, which counts itself.
const tcpLenField = 2

// tcpMinPayload is the smallest frame payload that can be classified: a
// non-ESP marker or an ESP SPI (4 bytes). Anything shorter is invalid.
const tcpMinPayload = 4

// tcpMaxFrame is the largest frame the 16-bit Length field can describe.
const tcpMaxFrame = 65535

// Framing errors: each ends the connection (a stream that lost its framing
// cannot be resynchronised) and is counted by its reason.
var (
	errTCPPrefix   = errors.New("stream does not start with the RFC 9329 prefix IKETCP")
	errTCPShort    = errors.New("frame shorter than a non-ESP marker or ESP SPI")
	errTCPTooLong  = errors.New("frame longer than the configured maximum")
	errTCPTruncEOF = errors.New("stream ended inside a frame")
)

// tcpFrameError is a framing error with the frame's Length.
type tcpFrameError struct {
	err    error
	length int
}

func (e *tcpFrameError) Error() string { return fmt.Sprintf("%v (length %d)", e.err, e.length) }
func (e *tcpFrameError) Unwrap() error { return e.err }

// tcpFrameReader splits an RFC 9329 stream into frame payloads. It keeps
// no buffer of its own: the caller's buffer receives each payload, so a
// connection costs memory only while a frame is being read.
type tcpFrameReader struct {
	r        io.Reader
	prefixed bool // the prefix was read
	// started is set once a frame's first byte was read: the caller can
	// then bound the time to complete it.
	started func()
}

// readPrefix reads and checks the stream prefix.
func (fr *tcpFrameReader) readPrefix() error {
	var b [len(tcpPrefix)]byte
	if _, err := io.ReadFull(fr.r, b[:]); err != nil {
		if errors.Is(err, io.EOF) {
			// closed before sending anything
			return fmt.Errorf("%w: %w", errTCPPrefix, io.EOF)
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return errTCPPrefix
		}
		return err
	}
	if string(b[:]) != tcpPrefix {
		return errTCPPrefix
	}
	fr.prefixed = true
	return nil
}

// next reads the next frame's payload into a buffer of its length from
// alloc and returns it. max bounds the payload (the Length minus the
// field); a larger frame is refused before anything is allocated for it.
// io.EOF is returned only between frames.
func (fr *tcpFrameReader) next(alloc func(n int) []byte, max int) ([]byte, error) {
	if !fr.prefixed {
		if err := fr.readPrefix(); err != nil {
			return nil, err
		}
	}
	var h [tcpLenField]byte
	n, err := io.ReadFull(fr.r, h[:1])
	if n == 0 {
		return nil, err // io.EOF between frames, or a read error
	}
	if fr.started != nil {
		fr.started()
	}
	if _, err := io.ReadFull(fr.r, h[1:]); err != nil {
		return nil, eofInside(err)
	}
	length := int(binary.BigEndian.Uint16(h[:]))
	if length < tcpLenField+tcpMinPayload {
		return nil, &tcpFrameError{errTCPShort, length}
	}
	plen := length - tcpLenField
	if plen > max {
		return nil, &tcpFrameError{errTCPTooLong, length}
	}
	buf := alloc(plen)
	if _, err := io.ReadFull(fr.r, buf[:plen]); err != nil {
		return nil, eofInside(err)
	}
	return buf[:plen], nil
}

func eofInside(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errTCPTruncEOF
	}
	return err
}

// appendTCPFrame appends payload framed for the stream (Length, then the
// payload). The caller ensures len(payload) <= tcpMaxFrame-tcpLenField.
func appendTCPFrame(dst, payload []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(payload)+tcpLenField))
	return append(dst, payload...)
}

// splitTCPStream decodes a whole stream held in memory (the reference the
// fuzz target compares the incremental reader with): the frames' payloads
// up to the first error, and that error (nil at a clean end).
func splitTCPStream(b []byte, max int) ([][]byte, error) {
	if len(b) < len(tcpPrefix) || string(b[:len(tcpPrefix)]) != tcpPrefix {
		return nil, errTCPPrefix
	}
	b = b[len(tcpPrefix):]
	var out [][]byte
	for len(b) > 0 {
		if len(b) < tcpLenField {
			return out, errTCPTruncEOF
		}
		length := int(binary.BigEndian.Uint16(b))
		switch {
		case length < tcpLenField+tcpMinPayload:
			return out, errTCPShort
		case length-tcpLenField > max:
			return out, errTCPTooLong
		case length > len(b):
			return out, errTCPTruncEOF
		}
		out = append(out, b[tcpLenField:length])
		b = b[length:]
	}
	return out, nil
}
