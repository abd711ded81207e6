package httpwasm

import (
	"context"
	"log/slog"
	"net/http"
	"sort"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// The ABI's enumerations.
const (
	headerRequest          = 0
	headerResponse         = 1
	headerRequestTrailers  = 2
	headerResponseTrailers = 3

	bodyRequest  = 0
	bodyResponse = 1

	logDebug = -1
	logInfo  = 0
	logWarn  = 1
	logError = 2
	logNone  = 3
)

const (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

// hostFunc is one function of the "http_handler" module.
type hostFunc struct {
	name    string
	params  []api.ValueType
	results []api.ValueType
	fn      func(ctx context.Context, c *call, mem api.Memory, s []uint64)
	// anytime: the function works in lifecycle calls too (lifeCall).
	anytime bool
}

// hostFuncs is the host side of the ABI; docs/http.md lists it.
var hostFuncs = []hostFunc{
	{"enable_features", []api.ValueType{i32}, []api.ValueType{i32}, func(_ context.Context, c *call, _ api.Memory, s []uint64) {
		c.features |= uint32(s[0]) & supported
		s[0] = uint64(c.features)
	}, false},
	{"get_config", []api.ValueType{i32, i32}, []api.ValueType{i32}, func(_ context.Context, c *call, mem api.Memory, s []uint64) {
		s[0] = uint64(c.writeBuf(mem, s[0], s[1], c.cfg))
	}, false},
	{"log", []api.ValueType{i32, i32, i32}, nil, func(_ context.Context, c *call, mem api.Memory, s []uint64) {
		msg, ok := c.read(mem, s[1], s[2])
		if !ok {
			return
		}
		c.log.Log(context.Background(), slogLevel(int32(s[0])), "http-wasm guest: "+string(msg))
	}, true},
	{"log_enabled", []api.ValueType{i32}, []api.ValueType{i32}, func(_ context.Context, c *call, _ api.Memory, s []uint64) {
		lvl := int32(s[0])
		if lvl < logNone && c.log.Enabled(context.Background(), slogLevel(lvl)) {
			s[0] = 1
		} else {
			s[0] = 0
		}
	}, true},
	{"get_method", []api.ValueType{i32, i32}, []api.ValueType{i32}, func(_ context.Context, c *call, mem api.Memory, s []uint64) {
		s[0] = uint64(c.writeBuf(mem, s[0], s[1], []byte(c.r.Method)))
	}, false},
	{"set_method", []api.ValueType{i32, i32}, nil, func(_ context.Context, c *call, mem api.Memory, s []uint64) {
		if b, ok := c.read(mem, s[0], s[1]); ok {
			if !validHeaderName(string(b)) {
				c.fault("set_method: invalid method %q", b)
				return
			}
			c.r.Method = string(b)
		}
	}, false},
	{"get_uri", []api.ValueType{i32, i32}, []api.ValueType{i32}, func(_ context.Context, c *call, mem api.Memory, s []uint64) {
		s[0] = uint64(c.writeBuf(mem, s[0], s[1], []byte(c.r.URL.RequestURI())))
	}, false},
	{"set_uri", []api.ValueType{i32, i32}, nil, func(_ context.Context, c *call, mem api.Memory, s []uint64) {
		if b, ok := c.read(mem, s[0], s[1]); ok {
			u, err := c.r.URL.Parse(string(b))
			if err != nil || !validHeaderValue(string(b)) {
				c.fault("set_uri: invalid URI %q", b)
				return
			}
			c.r.URL = u
			c.r.RequestURI = u.RequestURI()
		}
	}, false},
	{"get_protocol_version", []api.ValueType{i32, i32}, []api.ValueType{i32}, func(_ context.Context, c *call, mem api.Memory, s []uint64) {
		s[0] = uint64(c.writeBuf(mem, s[0], s[1], []byte(c.r.Proto)))
	}, false},
	{"get_source_addr", []api.ValueType{i32, i32}, []api.ValueType{i32}, func(_ context.Context, c *call, mem api.Memory, s []uint64) {
		s[0] = uint64(c.writeBuf(mem, s[0], s[1], []byte(c.r.RemoteAddr)))
	}, false},
	{"get_header_names", []api.ValueType{i32, i32, i32}, []api.ValueType{i64}, func(_ context.Context, c *call, mem api.Memory, s []uint64) {
		h := c.headers(uint32(s[0]))
		names := make([]string, 0, len(h))
		for k := range h {
			names = append(names, k)
		}
		sort.Strings(names)
		s[0] = c.writeList(mem, s[1], s[2], names)
	}, false},
	{"get_header_values", []api.ValueType{i32, i32, i32, i32, i32}, []api.ValueType{i64}, func(_ context.Context, c *call, mem api.Memory, s []uint64) {
		name, ok := c.read(mem, s[1], s[2])
		if !ok {
			s[0] = 0
			return
		}
		s[0] = c.writeList(mem, s[3], s[4], c.headers(uint32(s[0])).Values(string(name)))
	}, false},
	{"set_header_value", []api.ValueType{i32, i32, i32, i32, i32}, nil, func(_ context.Context, c *call, mem api.Memory, s []uint64) {
		if h, k, v, ok := c.headerArgs(mem, s); ok {
			h.Set(k, v)
		}
	}, false},
	{"add_header_value", []api.ValueType{i32, i32, i32, i32, i32}, nil, func(_ context.Context, c *call, mem api.Memory, s []uint64) {
		if h, k, v, ok := c.headerArgs(mem, s); ok {
			h.Add(k, v)
		}
	}, false},
	{"remove_header", []api.ValueType{i32, i32, i32}, nil, func(_ context.Context, c *call, mem api.Memory, s []uint64) {
		if name, ok := c.read(mem, s[1], s[2]); ok {
			c.headers(uint32(s[0])).Del(string(name))
		}
	}, false},
	{"read_body", []api.ValueType{i32, i32, i32}, []api.ValueType{i64}, func(_ context.Context, c *call, mem api.Memory, s []uint64) {
		var src []byte
		var off *int
		switch uint32(s[0]) {
		case bodyRequest:
			c.readRequestBody()
			src, off = c.reqBody, &c.reqOff
		case bodyResponse:
			src, off = c.body.Bytes(), &c.respOff
		default:
			c.fault("read_body: body kind %d", uint32(s[0]))
			s[0] = 0
			return
		}
		rest := src[*off:]
		n := min(uint32(len(rest)), uint32(s[2]))
		if n > 0 && !mem.Write(uint32(s[1]), rest[:n]) {
			c.fault("read_body: buffer out of range")
			s[0] = 0
			return
		}
		*off += int(n)
		var eof uint64
		if *off == len(src) {
			eof = 1
		}
		s[0] = eof<<32 | uint64(n)
	}, false},
	{"write_body", []api.ValueType{i32, i32, i32}, nil, func(_ context.Context, c *call, mem api.Memory, s []uint64) {
		b, ok := c.read(mem, s[1], s[2])
		if !ok {
			return
		}
		switch uint32(s[0]) {
		case bodyRequest:
			// The request body as the next handler will read it: the
			// first write replaces the client's.
			if !c.reqWritten {
				c.reqWritten, c.reqRead, c.reqBody, c.reqOff = true, true, nil, 0
			}
			c.reqBody = append(c.reqBody, b...)
		case bodyResponse:
			if c.nextDone && !c.respWritten {
				c.body.Reset() // the first write after next replaces its body
			}
			c.respWritten = true
			c.body.Write(b)
		default:
			c.fault("write_body: body kind %d", uint32(s[0]))
		}
	}, false},
	{"get_status_code", nil, []api.ValueType{i32}, func(_ context.Context, c *call, _ api.Memory, s []uint64) {
		s[0] = uint64(c.status)
	}, false},
	{"set_status_code", []api.ValueType{i32}, nil, func(_ context.Context, c *call, _ api.Memory, s []uint64) {
		code := int32(s[0])
		if code < 100 || code > 999 {
			c.fault("set_status_code: invalid status %d", code)
			return
		}
		c.status = int(code)
	}, false},
}

func slogLevel(l int32) slog.Level {
	switch {
	case l <= logDebug:
		return slog.LevelDebug
	case l == logInfo:
		return slog.LevelInfo
	case l == logWarn:
		return slog.LevelWarn
	}
	return slog.LevelError
}

// instantiateHost adds the "http_handler" host module to rt.
func instantiateHost(ctx context.Context, rt wazero.Runtime) error {
	b := rt.NewHostModuleBuilder("http_handler")
	for _, f := range hostFuncs {
		fn := f.fn
		b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, m api.Module, s []uint64) {
			c, _ := ctx.Value(callKey{}).(*call)
			if c == nil || c.life && !f.anytime { // outside a request: nothing to see
				for i := range s {
					s[i] = 0
				}
				return
			}
			fn(ctx, c, m.Memory(), s)
		}), f.params, f.results).Export(f.name)
	}
	_, err := b.Instantiate(ctx)
	return err
}

// read returns the guest's bytes at ptr, n (a copy).
func (c *call) read(mem api.Memory, ptr, n uint64) ([]byte, bool) {
	b, ok := mem.Read(uint32(ptr), uint32(n))
	if !ok {
		c.fault("memory access out of range (%d, %d)", uint32(ptr), uint32(n))
		return nil, false
	}
	return append([]byte(nil), b...), true
}

// writeBuf writes v at buf when it fits in limit, and returns its length
// either way (the ABI's convention: a longer value is not written).
func (c *call) writeBuf(mem api.Memory, buf, limit uint64, v []byte) uint32 {
	if uint32(len(v)) <= uint32(limit) && len(v) > 0 && !mem.Write(uint32(buf), v) {
		c.fault("buffer out of range")
	}
	return uint32(len(v))
}

// writeList writes vs NUL-terminated at buf when they fit in limit, and
// returns count<<32 | length.
func (c *call) writeList(mem api.Memory, buf, limit uint64, vs []string) uint64 {
	var out []byte
	for _, v := range vs {
		out = append(out, v...)
		out = append(out, 0)
	}
	n := c.writeBuf(mem, buf, limit, out)
	return uint64(len(vs))<<32 | uint64(n)
}

func (c *call) headers(kind uint32) http.Header {
	switch kind {
	case headerRequest:
		return c.r.Header
	case headerResponse:
		return c.header
	case headerRequestTrailers, headerResponseTrailers:
		return http.Header{} // trailers are not supported (not enabled)
	}
	c.fault("header kind %d", kind)
	return http.Header{}
}

func (c *call) headerArgs(mem api.Memory, s []uint64) (http.Header, string, string, bool) {
	name, ok := c.read(mem, s[1], s[2])
	if !ok {
		return nil, "", "", false
	}
	value, ok := c.read(mem, s[3], s[4])
	if !ok {
		return nil, "", "", false
	}
	if !validHeaderName(string(name)) || !validHeaderValue(string(value)) {
		c.fault("invalid header %q: %q", name, value)
		return nil, "", "", false
	}
	kind := uint32(s[0])
	if kind == headerRequestTrailers || kind == headerResponseTrailers {
		c.fault("trailers are not supported")
		return nil, "", "", false
	}
	return c.headers(kind), string(name), string(value), true
}
