//go:build unix

package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDataDir holds an exclusive lock on dir/serve.lock until release or
// the process ends: one server per SQLite data folder, so that the server
// may trust its caches of what only it writes.
func lockDataDir(dir string) (release func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, "serve.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data folder: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data folder %s is in use by another fota serve: stop that one, or give this one its own --data (several servers share a database with --db postgres://...)", dir)
		}
		return nil, fmt.Errorf("lock data folder %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

// dataLockHeld says whether lockDataDir really locks on this system.
const dataLockHeld = true

// keepOwner gives path the owner and group old had (a file replaced by
// one this process wrote).
func keepOwner(path string, old os.FileInfo) error {
	st, ok := old.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	return os.Lchown(path, int(st.Uid), int(st.Gid))
}
