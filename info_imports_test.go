package raceless

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// Info.Imports is modinfo's "imports": encoded under that key, left out
// when empty, and decoded back in order.
func TestInfoImportsJSON(t *testing.T) {
	info := Info{Name: "consumer", Imports: []string{"mul", "add"}}
	b, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"imports":["mul","add"]`) {
		t.Fatalf("encoded as %s", b)
	}
	var back Info
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, info) {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	if b, err := json.Marshal(Info{Name: "plain"}); err != nil || strings.Contains(string(b), "imports") {
		t.Fatalf("no imports encoded as %s, %v", b, err)
	}
}
