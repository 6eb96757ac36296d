//go:build !unix

package cli

import "os"

// lockDataDir cannot lock here; the server then keeps its session
// snapshots as briefly as replicas do.
func lockDataDir(string) (func(), error) { return func() {}, nil }

const dataLockHeld = false

// keepOwner does nothing where files have no Unix owner.
func keepOwner(string, os.FileInfo) error { return nil }
