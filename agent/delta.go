package agent

import (
	"errors"
	"fmt"
	"io"

	"github.com/ecowatt/fota/delta"
)

// Delta updates: the server may offer, instead of the full image, a
// detools patch from exactly the image this device runs (its signed
// SHA-256, reported at check-in). The patch is decrypted as it arrives and
// applied at once, reading the running slot, which is never written, and
// writing the new image into the other slot; its checkpoints hold the
// patcher's state next to the decrypter's, so a power cut resumes it. The
// image it makes is held to the same signed size and SHA-256 as a full
// download's before the slot is marked. A patch that cannot make that
// image here is reported failed, and the server's next offer to this
// device is the full image, which this agent asks for at once.

// deltaError is a delta patch that failed on this device: it does not fit
// the running image, is malformed, or made an image that failed its hash.
// It says nothing against the release.
type deltaError struct{ err error }

func (e *deltaError) Error() string { return "delta patch failed: " + e.err.Error() }
func (e *deltaError) Unwrap() error { return e.err }

// deltaFailed is a final deltaError: retrying the same patch cannot help.
func deltaFailed(format string, args ...any) error {
	return &deltaError{fatalf(format, args...)}
}

// IsDeltaFailure reports whether err is a delta patch that failed on the
// device: the agent asks for the full image next.
func IsDeltaFailure(err error) bool { return isDeltaFailure(err) }

// isDeltaFailure reports whether err is a failed delta patch.
func isDeltaFailure(err error) bool {
	var de *deltaError
	return errors.As(err, &de)
}

// runningImage reads the running slot up to the image's size: the base a
// patch is applied onto.
type runningImage struct {
	slots Slots
	slot  int
	size  int64
}

func (r *runningImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= r.size {
		return 0, io.EOF
	}
	short := false
	if int64(len(p)) > r.size-off {
		p, short = p[:r.size-off], true
	}
	n, err := r.slots.ReadAt(r.slot, p, off)
	if err == nil && short {
		err = io.EOF
	}
	return n, err
}

// sequentialSlot is the patcher's output: the slot writer, which erases,
// writes and hashes in order, so every write must follow the last.
type sequentialSlot struct{ w *slotWriter }

func (s sequentialSlot) WriteAt(p []byte, off int64) (int, error) {
	if off != s.w.off {
		return 0, fmt.Errorf("patch output at %d, expected %d", off, s.w.off)
	}
	return s.w.Write(p)
}

// patchSink is what the decrypter writes a patch into: the patcher, with
// its errors made delta failures.
type patchSink struct{ p *delta.Patcher }

func (s patchSink) Write(b []byte) (int, error) {
	n, err := s.p.Write(b)
	if err != nil {
		return n, deltaFailed("%v", err)
	}
	return n, nil
}

// newPatcher starts or resumes the patcher of a delta download into w.
// state is the checkpointed patcher (nil to start).
func (a *Agent) newPatcher(o *offer, w *slotWriter, state []byte) (*delta.Patcher, error) {
	base := &runningImage{slots: a.slots, slot: a.boot.Slot, size: o.delta.baseSize}
	out := sequentialSlot{w}
	if state == nil {
		return delta.NewPatcher(base, base.size, out, o.plaintextSize), nil
	}
	return delta.ResumePatcher(base, base.size, out, o.plaintextSize, state)
}

// finishPatch checks a delta download once its last chunk is in: the
// whole patch arrived and was applied, and made an image of the signed
// size and SHA-256 (install checks both again, as for a full download).
func (a *Agent) finishPatch(o *offer, dec interface{ Written() int64 }, p *delta.Patcher, w *slotWriter) error {
	if dec.Written() != o.delta.patchSize {
		return deltaFailed("decrypted a %d-byte patch, the signed manifest says %d", dec.Written(), o.delta.patchSize)
	}
	if err := p.Close(); err != nil {
		return deltaFailed("%v", err)
	}
	if w.off != o.plaintextSize {
		return deltaFailed("the patch made %d bytes, the release's image has %d", w.off, o.plaintextSize)
	}
	if [32]byte(w.hash.Sum(nil)) != o.plaintextSHA256 {
		return deltaFailed("the image the patch made does not match the release's signed sha256 (was it made from another image?)")
	}
	return nil
}
