//go:build wasip1

// Command refuser keeps an internal count of users (open and close, two
// symbols) and refuses to exit while it is not zero: exit returns the busy
// count, the host keeps the module live, exactly as it was.
package main

import (
	"fmt"

	"github.com/raceless/raceless/wasm/sdk"
)

var users int64

func init() {
	sdk.OnInit(func() error {
		for _, s := range []string{"open", "close", "users"} {
			if err := sdk.Export(s); err != nil {
				return err
			}
		}
		return nil
	})
	sdk.OnExit(func() (int, error) {
		if users > 0 {
			sdk.Log(fmt.Sprintf("refusing to exit: %d users", users))
			return int(users), nil
		}
		if users < 0 {
			return 0, fmt.Errorf("user count went negative (%d): %w", users, sdk.ErrInvalid)
		}
		return 0, nil
	})
}

//go:wasmexport open
func open() int64 { users++; return users }

//go:wasmexport close
func close_() int64 { users--; return users }

//go:wasmexport users
func nusers() int64 { return users }

func main() {}
