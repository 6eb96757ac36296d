package bundle

import (
	"fmt"
	"io"
	"sync"
)

// bufferPool recycles the streaming buffers: a server verifying many
// uploads, or a benchmark, would otherwise allocate and zero them each time.
var bufferPool = sync.Pool{New: func() any { return new([streamBuffer]byte) }}

// asyncWriter writes to w on another goroutine, so that hashing and
// spooling run on a second core while the caller encrypts or decrypts.
// Write copies the data into one of a few fixed buffers, which keeps memory
// constant and lets the caller reuse (or encrypt in place) its buffer at once.
type asyncWriter struct {
	w    io.Writer
	work chan []byte
	free chan []byte
	done chan struct{}
	err  error // set by the goroutine; read only after done is closed
}

const asyncBuffers = 4

func newAsyncWriter(w io.Writer) *asyncWriter {
	a := &asyncWriter{
		w:    w,
		work: make(chan []byte, asyncBuffers),
		free: make(chan []byte, asyncBuffers),
		done: make(chan struct{}),
	}
	for range asyncBuffers {
		a.free <- bufferPool.Get().(*[streamBuffer]byte)[:]
	}
	go func() {
		defer close(a.done)
		for b := range a.work {
			if a.err == nil {
				_, a.err = a.w.Write(b)
			}
			a.free <- b[:cap(b)]
		}
	}()
	return a
}

// Write never fails itself; an error of w is returned by Close.
func (a *asyncWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		b := <-a.free
		k := copy(b, p)
		a.work <- b[:k]
		p = p[k:]
	}
	return n, nil
}

// Close waits for every pending write and returns the first error of w. It
// must be called exactly once, on error paths too, to stop the goroutine.
func (a *asyncWriter) Close() error {
	close(a.work)
	<-a.done
	for range asyncBuffers {
		bufferPool.Put((*[streamBuffer]byte)(<-a.free))
	}
	if a.err != nil {
		return fmt.Errorf("async write: %w", a.err)
	}
	return nil
}
