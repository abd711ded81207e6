package grace

import "github.com/raceless/raceless/internal/percpu"

func lightForTest() bool { return percpu.Light() }
