package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
)

// ErrNoDaemon is returned by Call when nothing listens on the socket.
var ErrNoDaemon = errors.New("cannot connect to the raceless daemon")

// Call sends req to the daemon at socket and returns the final response's
// data, or its error as an *Error (which errors.Is compares with the core's
// sentinels). onProgress, if not nil, receives each progress line.
// Cancelling ctx closes the connection, which cancels the request in the
// daemon.
func Call(ctx context.Context, socket string, req *Request, onProgress func(json.RawMessage)) (json.RawMessage, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %w", ErrNoDaemon, socket, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	line, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	// A refused peer may be answered and closed before its request is
	// written: the answer is read below either way.
	_, _ = c.Write(append(line, '\n'))
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	for sc.Scan() {
		var r Response
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("malformed response from the daemon: %w", err)
		}
		if r.Progress != nil {
			if onProgress != nil {
				onProgress(r.Progress)
			}
			continue
		}
		if r.Error != nil {
			return nil, r.Error
		}
		return r.Data, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading from the daemon: %w", err)
	}
	return nil, errors.New("the daemon closed the connection without an answer")
}
