package sqlite

import (
	"context"
)

// A batcher group-commits the most frequent device writes (request nonces,
// last-seen times): one goroutine takes the writes that wait, up to
// batchMax at a time, and writes them in one transaction, answering each
// caller with its own result. Callers still wait for their write, so
// nothing changes for them but the time: with thousands of devices
// checking in at once, one write transaction per request queued them all
// behind SQLite's one write lock.
type batcher[T any] struct {
	reqs  chan batchReq[T]
	stop  <-chan struct{}
	done  chan struct{}
	write func(batch []T) []error // one result per item
}

type batchReq[T any] struct {
	item T
	done chan error
}

// batchMax bounds a batch: a transaction of 512 small writes takes a few
// milliseconds, so the writes behind it wait no longer than that.
const batchMax = 512

// startBatcher starts a batcher; it ends when stop is closed, failing the
// writes still queued with errClosed.
func startBatcher[T any](stop <-chan struct{}, write func(batch []T) []error) *batcher[T] {
	b := &batcher[T]{reqs: make(chan batchReq[T], batchMax), stop: stop, done: make(chan struct{}), write: write}
	go b.run()
	return b
}

func (b *batcher[T]) run() {
	defer close(b.done)
	reqs := make([]batchReq[T], 0, batchMax)
	items := make([]T, 0, batchMax)
	for {
		select {
		case <-b.stop:
			for {
				select {
				case r := <-b.reqs:
					r.done <- errClosed
				default:
					return
				}
			}
		case first := <-b.reqs:
			reqs = append(reqs[:0], first)
		fill:
			for len(reqs) < batchMax {
				select {
				case r := <-b.reqs:
					reqs = append(reqs, r)
				default:
					break fill
				}
			}
			items = items[:0]
			for _, r := range reqs {
				items = append(items, r.item)
			}
			results := b.write(items)
			for i, r := range reqs {
				r.done <- results[i]
			}
			clear(items) // keep no caller's data until the next batch
		}
	}
}

// do queues item and waits for its result. A caller that gives up (ctx)
// does not stop its write, which may still happen.
func (b *batcher[T]) do(ctx context.Context, item T) error {
	r := batchReq[T]{item: item, done: make(chan error, 1)}
	select {
	case b.reqs <- r:
	case <-b.stop:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// results fills a batch's results with err where it failed as a whole.
func failAll(n int, err error) []error {
	out := make([]error, n)
	for i := range out {
		out[i] = err
	}
	return out
}
