package cli

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/raceless/raceless/internal/atomicfile"
	"github.com/raceless/raceless/wasm"
	"github.com/raceless/raceless/wasm/modsig"
	"github.com/raceless/raceless/wasm/policy"

	"github.com/raceless/raceless/cmd/raceless/internal/control"
	"github.com/raceless/raceless/cmd/raceless/internal/daemon"
)

// runKeygen writes a new Ed25519 key pair: NAME.key (the private key, mode
// 0600) and NAME.pub (the public key, for a keyring), refusing to replace
// either.
func runKeygen(e *env) error {
	if len(e.args.pos) != 1 {
		return usageErrorf("want exactly one NAME")
	}
	name := e.args.pos[0]
	pub, priv, err := modsig.GenerateKey()
	if err != nil {
		return e.fail(err, "%v", err)
	}
	privPEM, err := modsig.MarshalPrivateKey(priv)
	if err != nil {
		return e.fail(err, "%v", err)
	}
	pubPEM, err := modsig.MarshalPublicKey(pub)
	if err != nil {
		return e.fail(err, "%v", err)
	}
	keyFile, pubFile := name+".key", name+modsig.PublicKeyExt
	if _, err := os.Lstat(pubFile); err == nil {
		return e.fail(fs.ErrExist, "%s: file exists", pubFile)
	}
	// O_EXCL: never over an existing key, and mode 0600 from the start.
	if err := writeNew(keyFile, privPEM, 0o600); err != nil {
		return e.fail(err, "%v", err)
	}
	if err := writeNew(pubFile, pubPEM, 0o644); err != nil {
		_ = os.Remove(keyFile) // no private key without its public one
		return e.fail(err, "%v", err)
	}
	fmt.Fprintf(e.stdout, "%s: sig_key %s\n", pubFile, modsig.KeyID(pub))
	return nil
}

// writeNew creates path, which must not exist, with data and mode perm.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
	}
	return err
}

var signFlags = []flagSpec{
	{long: "key", kind: requiredValue, arg: "KEY", help: "the private key to sign with (from raceless keygen)"},
	{short: "o", long: "output", kind: requiredValue, arg: "OUT", help: "write the signed module to OUT instead of replacing FILE"},
}

// runSign signs a module file: its signature section, replacing any it
// had, covers every byte before it. The file is replaced atomically.
func runSign(e *env) error {
	if len(e.args.pos) != 1 {
		return usageErrorf("want exactly one FILE")
	}
	keyFile := e.args.val("key")
	if keyFile == "" {
		return usageErrorf("missing --key KEY")
	}
	file := e.args.pos[0]
	out := file
	if e.args.has("output") {
		out = e.args.val("output")
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return e.fail(err, "%v", err)
	}
	priv, err := modsig.ParsePrivateKey(keyPEM)
	if err != nil {
		return e.fail(err, "%s: %v", keyFile, err)
	}
	bin, err := os.ReadFile(file)
	if err != nil {
		return e.fail(err, "%v", err)
	}
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(file); err == nil {
		mode = fi.Mode().Perm()
	}
	signed, err := modsig.Sign(bin, priv)
	if err != nil {
		return e.fail(err, "%s: %v", file, err)
	}
	if err := atomicfile.WriteFile(out, signed, mode); err != nil {
		return e.fail(err, "%v", err)
	}
	return nil
}

// runSigEnforce prints whether the daemon enforces module signatures, or
// with "on" turns enforcement on; "off" is refused.
func runSigEnforce(e *env) error {
	var arg string
	switch len(e.args.pos) {
	case 0:
	case 1:
		arg = e.args.pos[0]
		if arg != "on" && arg != "off" {
			return usageErrorf("want on, or nothing")
		}
	default:
		return usageErrorf("want on, or nothing")
	}
	var st daemon.SigEnforce
	if err := e.callInto(&control.Request{Op: "sig_enforce", Name: arg}, &st); err != nil {
		return err
	}
	if e.args.has("json") {
		return e.printJSON(st)
	}
	if arg == "" {
		fmt.Fprintln(e.stdout, map[bool]string{true: "on", false: "off"}[st.SigEnforce])
	}
	return nil
}

// trust is serve's module trust: the keyring, enforcement and the
// capability policy.
type trust struct {
	keys    *modsig.Keyring
	enforce bool
	granter *policy.Granter
}

// loadTrust reads serve's keyring directory (none: no key is trusted) and
// policy file (none: nothing is granted).
func loadTrust(e *env, keyringDir, policyFile string, enforce bool) (*trust, error) {
	t := &trust{enforce: enforce, granter: policy.NewGranter(policy.Empty)}
	if keyringDir != "" {
		k, err := modsig.LoadKeyring(keyringDir)
		if err != nil {
			return nil, e.fail(err, "cannot start: --keyring %s: %v", keyringDir, err)
		}
		t.keys = k
	}
	if policyFile != "" {
		p, err := policy.Load(policyFile)
		if err != nil {
			return nil, e.fail(err, "cannot start: --policy %s: %v", policyFile, err)
		}
		t.granter = policy.NewGranter(p)
	}
	return t, nil
}

// config sets c's signature checking (always on in the daemon: a module
// not signed by a key of the keyring taints itself) and capabilities.
func (t *trust) config(c wasm.Config) wasm.Config {
	c.SigCheck, c.Keyring, c.SigEnforce, c.Granter = true, t.keys, t.enforce, t.granter
	return c
}

// inspect is modinfo of a module file: its modinfo block, and its signature
// checked against keys.
func inspect(path string, keys *modsig.Keyring) (daemon.ModInfo, error) {
	fi, err := wasm.Inspect(path, keys)
	if err != nil {
		return daemon.ModInfo{}, err
	}
	r := fi.Signature
	si := &daemon.SigInfo{Status: r.Status.String(), KeyID: r.KeyID, Signer: r.Signer}
	if r.Status == modsig.Bad {
		si.Error = r.Err.Error()
	}
	return daemon.ModInfo{Filename: path, Info: fi.Block.Info, Capabilities: fi.Block.Capabilities, Signature: si, Sum: fi.Sum}, nil
}

// keyringFlag reads modinfo's --keyring directory (nil without one).
func keyringFlag(e *env) (*modsig.Keyring, error) {
	dir := e.args.val("keyring")
	if !e.args.has("keyring") {
		return nil, nil
	}
	k, err := modsig.LoadKeyring(dir)
	if err != nil {
		return nil, e.fail(err, "--keyring %s: %v", filepath.Clean(dir), err)
	}
	return k, nil
}
