// Package defaults is the default module set embedded in the raceless
// daemon: the native modules every `raceless serve` can load without any
// file on disk, and the ones it loads at boot.
package defaults

import (
	"github.com/raceless/raceless"
	"github.com/raceless/raceless/modules/hello"
	"github.com/raceless/raceless/modules/hello/consumer"
)

// Sources returns every built-in module, in boot order first.
func Sources() []raceless.Source {
	return []raceless.Source{
		hello.Source(),
		consumer.Source(),
	}
}

// Boot lists the modules `raceless serve` loads at start, in order.
func Boot() []string { return []string{hello.Name} }
