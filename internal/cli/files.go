package cli

import (
	"errors"
	"io/fs"
	"os"

	"github.com/ecowatt/fota/internal/atomicfile"
)

// writeAtomic creates path through a temporary file that fill writes and
// that takes the name only if fill succeeds; without force an existing path
// is refused before any work.
func writeAtomic(path string, perm fs.FileMode, force bool, fill func(f *os.File) error) error {
	err := atomicfile.Write(path, perm, force, fill)
	if errors.Is(err, atomicfile.ErrExists) {
		return withHint(errors.New(path+" already exists"), "use --force to replace it, or choose another name with -o")
	}
	return err
}
