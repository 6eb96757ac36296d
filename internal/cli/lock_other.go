//go:build !unix

package cli

// lockDataDir cannot lock here; the server then keeps its session
// snapshots as briefly as replicas do.
func lockDataDir(string) (func(), error) { return func() {}, nil }

const dataLockHeld = false
