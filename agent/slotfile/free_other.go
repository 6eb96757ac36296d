//go:build !(linux || darwin || freebsd)

package slotfile

import "errors"

// Free is not known on this system: the inventory leaves it out.
func (d *OSDisk) Free() (int64, error) { return 0, errors.ErrUnsupported }
