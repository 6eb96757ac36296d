//go:build linux || darwin || freebsd

package slotfile

import (
	"fmt"
	"syscall"
)

// Free is the space free to an unprivileged writer on the filesystem the
// folder is on: all the room the device's data has.
func (d *OSDisk) Free() (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.dir, &st); err != nil {
		return 0, fmt.Errorf("free space of %s: %w", d.dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
