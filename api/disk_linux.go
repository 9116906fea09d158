package api

import "golang.org/x/sys/unix"

// diskSpace returns the size and the space available to unprivileged users
// of the file system holding dir.
func diskSpace(dir string) (total, avail uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	bs := uint64(st.Bsize)
	return st.Blocks * bs, st.Bavail * bs, nil
}
