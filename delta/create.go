package delta

import (
	"bytes"
	"fmt"
	"index/suffixarray"
)

// CreateOptions configure Create.
type CreateOptions struct {
	// Compression is detools' name for the stream compression: "none",
	// "heatshrink" or "crle" once delta/compress is merged. Empty means "none".
	Compression string
}

// Create makes a sequential patch that turns from into to.
//
// The diff follows bsdiff's idea: exact matches found with a suffix array of
// from are grown forwards and backwards into approximate matches, so a region
// that differs from from in a few bytes (changed addresses, constants)
// becomes a "diff" of mostly zero bytes, which compresses well; what matches
// nothing is sent as "extra" bytes.
func Create(from, to []byte, opts CreateOptions) ([]byte, error) {
	name := opts.Compression
	if name == "" {
		name = "none"
	}
	c, err := lookupCodec(name)
	if err != nil {
		return nil, fmt.Errorf("creating a patch: %w", err)
	}
	if len(from) > MaxSize || len(to) > MaxSize {
		return nil, fmt.Errorf("creating a patch: images of %d and %d bytes: detools patches are limited to %d bytes (128 MiB) an image", len(from), len(to), MaxSize)
	}
	var out bytes.Buffer
	out.WriteByte(byte(typeSequential<<4 | compressionIDs[name]))
	out.Write(appendSize(nil, int64(len(to))))
	if len(to) == 0 {
		// detools writes nothing more, not even an empty compressed stream.
		return out.Bytes(), nil
	}
	w, err := c.writer(&out)
	if err != nil {
		return nil, fmt.Errorf("starting %s compression: %w", name, err)
	}
	// The data format patch size: 0, no --data-format transformation.
	stream := appendSize(nil, 0)
	for _, ch := range diffChunks(from, to) {
		stream = appendSize(stream, int64(ch.diffLen))
		for i := 0; i < ch.diffLen; i++ {
			stream = append(stream, to[ch.toPos+i]-from[ch.fromPos+i])
		}
		stream = appendSize(stream, int64(len(ch.extra)))
		stream = append(stream, ch.extra...)
		stream = appendSize(stream, ch.adjust)
		// Hand the stream over between chunks so this buffer stays about
		// one chunk long rather than growing to a second copy of the patch.
		if len(stream) >= bufSize {
			if _, err := w.Write(stream); err != nil {
				return nil, fmt.Errorf("%s compression: %w", name, err)
			}
			stream = stream[:0]
		}
	}
	if _, err := w.Write(stream); err != nil {
		return nil, fmt.Errorf("%s compression: %w", name, err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("finishing %s compression: %w", name, err)
	}
	return out.Bytes(), nil
}

// chunk is one (diff, extra, adjustment) triple: diffLen bytes of to from
// toPos are from[fromPos:]+diff, then extra follows verbatim, then the from
// offset moves by adjust.
type chunk struct {
	toPos, fromPos, diffLen int
	extra                   []byte
	adjust                  int64
}

// minGain is how many more bytes a new exact match must cover than the
// current alignment already does before it is worth a new chunk (a chunk
// costs a few size bytes, and a switch loses the old alignment).
const minGain = 8

// diffChunks splits to into chunks against from.
func diffChunks(from, to []byte) []chunk {
	m := newMatcher(from)
	var chunks []chunk
	// The previous chunk's approximate match ends at (lastTo, lastFrom);
	// offset is from minus to position of the current alignment.
	lastTo, lastFrom, offset := 0, 0, 0
	scan, matchLen, matchPos := 0, 0, 0
	for scan < len(to) {
		scan += matchLen
		// aligned counts the bytes of to[scan:covered] that the current
		// alignment (offset) already reproduces; kept incrementally so a
		// long near-match is not rescored at every position.
		aligned, covered := 0, scan
		for ; scan < len(to); scan++ {
			matchPos, matchLen = m.longest(to[scan:])
			for ; covered < scan+matchLen; covered++ {
				if f := covered + offset; f >= 0 && f < len(from) && from[f] == to[covered] {
					aligned++
				}
			}
			if (matchLen == aligned && matchLen != 0) || matchLen > aligned+minGain {
				break
			}
			if f := scan + offset; f >= 0 && f < len(from) && from[f] == to[scan] {
				aligned--
			}
		}
		if matchLen == aligned && scan != len(to) {
			// The current alignment is as good as the new match: keep it.
			continue
		}
		endTo, endFrom := scan, matchPos
		if scan == len(to) {
			endFrom = -1 // no next match; chosen below
		}
		ch, nextTo, nextFrom := extend(from, to, lastTo, lastFrom, endTo, endFrom)
		chunks = append(chunks, ch)
		lastTo, lastFrom = nextTo, nextFrom
		offset = matchPos - scan
	}
	return chunks
}

// extend grows the previous match forwards from (lastTo, lastFrom) and the
// next exact match backwards from (scanTo, scanFrom) while more than half
// their bytes agree, and makes the chunk between them. scanFrom < 0 means
// there is no next match (end of to). It returns the chunk and where the
// next chunk's diff starts.
func extend(from, to []byte, lastTo, lastFrom, scanTo, scanFrom int) (chunk, int, int) {
	// Forward: the length whose (agreeing*2 - length) is best.
	fwd, best, agree := 0, 0, 0
	for i := 0; lastTo+i < scanTo && lastFrom+i < len(from); {
		if from[lastFrom+i] == to[lastTo+i] {
			agree++
		}
		i++
		if score := agree*2 - i; score > best {
			best, fwd = score, i
		}
	}
	back := 0
	if scanFrom >= 0 {
		best, agree = 0, 0
		for i := 1; scanTo-i >= lastTo && scanFrom-i >= 0; i++ {
			if from[scanFrom-i] == to[scanTo-i] {
				agree++
			}
			if score := agree*2 - i; score > best {
				best, back = score, i
			}
		}
	}
	// Both may claim the same to bytes: split the overlap where the
	// forward alignment stops being the better one.
	if overlap := lastTo + fwd - (scanTo - back); overlap > 0 {
		run, bestRun, split := 0, 0, 0
		for i := 0; i < overlap; i++ {
			t := lastTo + fwd - overlap + i
			if to[t] == from[lastFrom+fwd-overlap+i] {
				run++
			}
			if to[t] == from[scanFrom-back+i] {
				run--
			}
			if run > bestRun {
				bestRun, split = run, i+1
			}
		}
		fwd += split - overlap
		back -= split
	}
	nextTo := scanTo - back
	nextFrom := scanFrom - back
	if scanFrom < 0 {
		// Last chunk: leave the from offset where the diff ended.
		nextFrom = lastFrom + fwd
	}
	ch := chunk{
		toPos:   lastTo,
		fromPos: lastFrom,
		diffLen: fwd,
		extra:   to[lastTo+fwd : nextTo],
		adjust:  int64(nextFrom - (lastFrom + fwd)),
	}
	return ch, nextTo, nextFrom
}

// matcher finds the longest prefix of a byte string that occurs in from.
type matcher struct {
	from  []byte
	index *suffixarray.Index
}

func newMatcher(from []byte) *matcher {
	return &matcher{from: from, index: suffixarray.New(from)}
}

// longest returns a position in from where the longest prefix of p that
// occurs in from starts, and that prefix's length (0 if none). The index
// answers "does this string occur", which is monotone in the prefix length,
// so the length is found by doubling then bisecting.
func (m *matcher) longest(p []byte) (pos, n int) {
	if len(m.from) == 0 || len(p) == 0 {
		return 0, 0
	}
	found := func(k int) (int, bool) {
		r := m.index.Lookup(p[:k], 1)
		if len(r) == 0 {
			return 0, false
		}
		return r[0], true
	}
	lo, hi := 0, 1 // p[:lo] occurs; p[:hi] is next to try
	for hi <= len(p) {
		at, ok := found(hi)
		if !ok {
			break
		}
		pos, lo = at, hi
		if hi == len(p) {
			return pos, lo
		}
		hi = min(hi*2, len(p))
	}
	if lo == 0 {
		return 0, 0
	}
	// p[:lo] occurs, p[:hi] does not.
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if at, ok := found(mid); ok {
			pos, lo = at, mid
		} else {
			hi = mid
		}
	}
	return pos, lo
}
