package daemon

import "testing"

// mountinfo's fields are octal-escaped by the kernel (a space is \040).
func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/tmp/a\040b`:   "/tmp/a b",
		`/x\134y`:       `/x\y`,
		`/plain`:        "/plain",
		`/short\04`:     `/short\04`,
		`/tab\011end\0`: "/tab\tend\\0",
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}
