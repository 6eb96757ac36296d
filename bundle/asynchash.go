package bundle

import (
	"fmt"
	"io"
	"sync"
)

// asyncBufferSize is the size of each hand-off buffer: large enough that
// handing one to the other goroutine (a wake-up) is rare next to hashing it.
const asyncBufferSize = 128 << 10

// asyncBuffers is how many hand-off buffers an asyncWriter cycles through.
const asyncBuffers = 3

// bufferPool recycles the hand-off buffers: a server verifying many uploads,
// or a benchmark, would otherwise allocate and zero them each time.
var bufferPool = sync.Pool{New: func() any { return new([asyncBufferSize]byte) }}

// asyncWriter writes to w on another goroutine, so that hashing and
// spooling run on a second core while the caller encrypts or decrypts.
// Write copies the data into a fixed buffer, which keeps memory constant
// and lets the caller reuse (or encrypt in place) its own buffer at once;
// full buffers go to the other goroutine.
type asyncWriter struct {
	w    io.Writer
	work chan []byte
	free chan []byte
	cur  []byte // the buffer being filled
	done chan struct{}
	err  error // set by the goroutine; read only after done is closed
}

func newAsyncWriter(w io.Writer) *asyncWriter {
	a := &asyncWriter{
		w:    w,
		work: make(chan []byte, asyncBuffers),
		free: make(chan []byte, asyncBuffers),
		done: make(chan struct{}),
	}
	for range asyncBuffers {
		a.free <- bufferPool.Get().(*[asyncBufferSize]byte)[:0]
	}
	go func() {
		defer close(a.done)
		for b := range a.work {
			if a.err == nil {
				_, a.err = a.w.Write(b)
			}
			a.free <- b[:0]
		}
	}()
	return a
}

// Write never fails itself; an error of w is returned by Close.
func (a *asyncWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if a.cur == nil {
			a.cur = <-a.free
		}
		k := copy(a.cur[len(a.cur):cap(a.cur)], p)
		a.cur = a.cur[:len(a.cur)+k]
		p = p[k:]
		if len(a.cur) == cap(a.cur) {
			a.work <- a.cur
			a.cur = nil
		}
	}
	return n, nil
}

// Close hands over what is buffered, waits for every pending write and
// returns the first error of w. It must be called exactly once, on error
// paths too, to stop the goroutine.
func (a *asyncWriter) Close() error {
	if len(a.cur) > 0 {
		a.work <- a.cur
	} else if a.cur != nil {
		a.free <- a.cur
	}
	a.cur = nil
	close(a.work)
	<-a.done
	for range asyncBuffers {
		bufferPool.Put((*[asyncBufferSize]byte)((<-a.free)[:asyncBufferSize]))
	}
	if a.err != nil {
		return fmt.Errorf("async write: %w", a.err)
	}
	return nil
}
