//go:build !linux

package api

import "errors"

func diskSpace(string) (total, avail uint64, err error) {
	return 0, 0, errors.New("disk space not available on this system")
}
