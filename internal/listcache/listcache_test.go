package listcache

import (
	"fmt"
	"slices"
	"testing"
)

func TestDecode(t *testing.T) {
	var c Cache
	for _, tc := range []struct {
		list []string
		text string
	}{{nil, "null"}, {[]string{}, "[]"}, {[]string{"a", "b,c"}, `["a","b,c"]`}} {
		if got := Encode(tc.list); got != tc.text {
			t.Fatalf("Encode(%#v) = %s, want %s", tc.list, got, tc.text)
		}
		for range 2 { // decoded, then from the cache
			var got []string
			if err := Decode(&c, tc.text, &got); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.list) || (got == nil) != (tc.list == nil) {
				t.Fatalf("Decode(%s) = %#v, want %#v", tc.text, got, tc.list)
			}
		}
	}
	// The caller owns what it gets: changing it changes no later read.
	var first, second []int
	if err := Decode(&c, "[10,50]", &first); err != nil {
		t.Fatal(err)
	}
	first[0] = 99
	if err := Decode(&c, "[10,50]", &second); err != nil || second[0] != 10 {
		t.Fatalf("a list changed by its reader reads back %v, %v", second, err)
	}
	// The same text as another type is decoded as that type.
	var strs []string
	if err := Decode(&c, "[10,50]", &strs); err == nil {
		t.Fatalf("ints decoded as strings: %v", strs)
	}
	var bad []int
	if err := Decode(&c, "[1,", &bad); err == nil {
		t.Fatal("a malformed list decoded")
	}
	// Past its bound the cache starts afresh rather than growing.
	for i := range 3 * maxLists {
		var l []int
		if err := Decode(&c, fmt.Sprintf("[%d]", i), &l); err != nil || l[0] != i {
			t.Fatalf("list %d: %v, %v", i, l, err)
		}
	}
	if n := len(c.lists); n > maxLists {
		t.Fatalf("%d lists kept, bound %d", n, maxLists)
	}
}
