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
		n, k, err := modinfo.Uleb32(p)
		if err != nil {
			return nil, err
		}
		p = p[k:]
		for i := uint32(0); i < n; i++ {
			l, k, err := modinfo.Uleb32(p)
			if err != nil || uint64(l) > uint64(len(p)-k) {
				return nil, fmt.Errorf("export section: %w", modinfo.ErrTruncated)
			}
			name := string(p[k : k+int(l)])
			p = p[k+int(l):]
			if len(p) < 1 {
				return nil, fmt.Errorf("export section: %w", modinfo.ErrTruncated)
			}
			kind := p[0]
			if _, k, err = modinfo.Uleb32(p[1:]); err != nil {
				return nil, fmt.Errorf("export section: %w", err)
			}
			p = p[1+k:]
			out[name] = kind
		}
	}
	return out, nil
}
