// Package listcache decodes the JSON lists the stores keep in text
// columns (a rollout's device ids, wave ends and windows), remembering
// each decoded list by its text. Every check-in reads its device's
// rollout, and a rollout targeting a thousand listed devices took half a
// millisecond to decode each time; looked up by its text, it takes a copy.
// Keyed by content, an entry is never stale: a changed list is another key.
package listcache

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
)

// maxLists bounds the cache: a few lists per rollout, and few rollouts
// are read by check-ins at any time. Past it the cache starts afresh.
const maxLists = 256

// Cache remembers decoded lists. The zero Cache is ready to use.
type Cache struct {
	mu    sync.Mutex
	lists map[string]any
}

// Decode sets *list to the JSON list text decodes to, nil for "null". The
// list is the caller's own: it may change it.
func Decode[T any](c *Cache, text string, list *[]T) error {
	if text == "null" {
		*list = nil
		return nil
	}
	c.mu.Lock()
	kept, ok := c.lists[text].([]T)
	c.mu.Unlock()
	if ok {
		*list = slices.Clone(kept)
		return nil
	}
	var decoded []T
	if err := json.Unmarshal([]byte(text), &decoded); err != nil {
		return fmt.Errorf("decode list: %w", err)
	}
	c.mu.Lock()
	if c.lists == nil || len(c.lists) >= maxLists {
		c.lists = map[string]any{}
	}
	c.lists[text] = decoded
	c.mu.Unlock()
	*list = slices.Clone(decoded)
	return nil
}

// Encode is the text of list as the stores keep it: JSON, null for nil.
func Encode[T any](list []T) string {
	b, err := json.Marshal(list)
	if err != nil {
		panic(fmt.Sprintf("listcache: encode %T: %v", list, err)) // lists of strings and ints always encode
	}
	return string(b)
}
