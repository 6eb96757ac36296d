package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// writeAtomic creates path through a temporary file in the same folder:
// write fills it, and only if write succeeds is it synced and moved into
// place. On any failure nothing is left behind. Without force an existing
// path is refused before any work and is never replaced.
func writeAtomic(path string, perm fs.FileMode, force bool, write func(f *os.File) error) (err error) {
	if !force {
		if _, err := os.Lstat(path); err == nil {
			return withHint(fmt.Errorf("%s already exists", path), "use --force to replace it, or choose another name with -o")
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(perm); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err = write(tmp); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if force {
		if err = os.Rename(tmp.Name(), path); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		return nil
	}
	// Link refuses to replace a file that appeared since the check above.
	if err = os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return withHint(fmt.Errorf("%s already exists", path), "use --force to replace it")
		}
		return fmt.Errorf("write %s: %w", path, err)
	}
	os.Remove(tmp.Name())
	return nil
}
