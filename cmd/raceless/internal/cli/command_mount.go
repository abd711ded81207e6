package cli

import (
	"fmt"
	"github.com/raceless/raceless/cmd/raceless/internal/daemon"

	"github.com/raceless/raceless/cmd/raceless/internal/control"
)

var mountFlags = []flagSpec{
	{short: "t", long: "types", kind: requiredValue, arg: "TYPE", help: "filesystem type (an unknown one is demand-loaded as fs-TYPE)"},
	{short: "o", long: "options", kind: requiredValue, arg: "OPTS", help: "mount options (X-mount.mkdir creates DIR first)"},
	{short: "B", long: "bind", help: "bind SRC at DIR"},
	{short: "R", long: "rbind", help: "bind SRC at DIR with its submounts"},
	{short: "M", long: "move", help: "move the mount at SRC to DIR"},
}

func runMount(e *env) error {
	pos := e.args.pos
	if len(pos) == 0 {
		var res daemon.MountsResult
		if err := e.callInto(&control.Request{Op: "mounts"}, &res); err != nil {
			return err
		}
		if e.args.has("json") {
			return e.printJSON(res.Mounts)
		}
		fmt.Fprint(e.stdout, res.Text)
		return nil
	}
	if len(pos) != 2 {
		return usageErrorf("want SRC DIR")
	}
	req := control.Request{Op: "mount", Source: pos[0], Target: pos[1], Type: e.args.val("types"), Options: e.args.val("options"),
		Bind: e.args.has("bind") || e.args.has("rbind"), Rec: e.args.has("rbind"), Move: e.args.has("move")}
	if req.Move && req.Bind {
		return usageErrorf("--move and --bind exclude each other")
	}
	if !req.Move && !req.Bind && req.Type == "" {
		return usageErrorf("-t TYPE is required")
	}
	if _, err := e.call(&req, nil); err != nil {
		return e.mountError(pos[1], err)
	}
	return nil
}

func (e *env) mountError(target string, err error) error {
	var we *control.Error
	if ok := asWire(err, &we); ok && we.Code != control.CodeUnsupported {
		return e.fail(err, "%s", we.Message)
	}
	return e.generic(err)
}

var umountFlags = []flagSpec{{short: "l", long: "lazy", help: "detach now, release at the last close"}}

func runUmount(e *env) error {
	if len(e.args.pos) != 1 {
		return usageErrorf("want exactly one directory")
	}
	if _, err := e.call(&control.Request{Op: "umount", Target: e.args.pos[0], Lazy: e.args.has("lazy")}, nil); err != nil {
		return e.mountError(e.args.pos[0], err)
	}
	return nil
}

// runCat prints a file of the daemon's namespace (raceless cat
// /proc/modules).
func runCat(e *env) error {
	if len(e.args.pos) == 0 {
		return usageErrorf("missing path")
	}
	for _, p := range e.args.pos {
		var data []byte
		if err := e.callInto(&control.Request{Op: "read", Target: p}, &data); err != nil {
			var we *control.Error
			if asWire(err, &we) {
				return e.fail(err, "%s", we.Message)
			}
			return err
		}
		e.stdout.Write(data)
	}
	return nil
}
