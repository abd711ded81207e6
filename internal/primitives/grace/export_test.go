package grace

import "github.com/raceless/raceless/internal/primitives/percpu"

func lightForTest() bool { return percpu.Light() }
