package wasm

import (
	"fmt"

	"github.com/raceless/raceless/wasm/modinfo"
)

// exportNames returns the names of the module's exports, by kind (0
// function, 1 table, 2 memory, 3 global), from its export section. It
// checks only the structure it reads.
func exportNames(b []byte) (map[string]byte, error) {
	secs, err := modinfo.Sections(b)
	if err != nil {
		return nil, err
	}
	out := map[string]byte{}
	for _, s := range secs {
		if s.ID != 7 {
			continue
		}
		p := s.Payload
		n, k, err := uleb(p)
		if err != nil {
			return nil, err
		}
		p = p[k:]
		for i := uint32(0); i < n; i++ {
			l, k, err := uleb(p)
			if err != nil || uint64(l) > uint64(len(p)-k) {
				return nil, fmt.Errorf("export section: %w", modinfo.ErrTruncated)
			}
			name := string(p[k : k+int(l)])
			p = p[k+int(l):]
			if len(p) < 1 {
				return nil, fmt.Errorf("export section: %w", modinfo.ErrTruncated)
			}
			kind := p[0]
			if _, k, err = uleb(p[1:]); err != nil {
				return nil, fmt.Errorf("export section: %w", err)
			}
			p = p[1+k:]
			out[name] = kind
		}
	}
	return out, nil
}

func uleb(b []byte) (uint32, int, error) {
	var v uint32
	for i := 0; i < 5 && i < len(b); i++ {
		c := b[i]
		if i == 4 && c > 0x0f {
			break
		}
		v |= uint32(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			return v, i + 1, nil
		}
	}
	return 0, 0, modinfo.ErrTruncated
}
