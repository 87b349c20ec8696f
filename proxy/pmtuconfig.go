package proxy

// proxy.pmtu_overrides and proxy.pmtu_step_down: parsing and lookup.

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// prefixMTU is one parsed PMTU override.
type prefixMTU struct {
	Prefix netip.Prefix
	MTU    int
}

// parseOverrides reads proxy.pmtu_overrides. viper splits keys at dots, so
// "10.0.0.0/8: 1280" can arrive as nested maps {"10":{"0":{"0":{"0/8":1280}}}};
// the path is joined back with dots.
func parseOverrides(v any) ([]prefixMTU, error) {
	var out []prefixMTU
	var errs []error
	var walk func(prefix string, v any)
	walk = func(key string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, vv := range x {
				walk(joinKey(key, k), vv)
			}
			return
		case map[any]any:
			for k, vv := range x {
				walk(joinKey(key, fmt.Sprint(k)), vv)
			}
			return
		}
		mtu, err := toInt(v)
		if err != nil || mtu < 576 || mtu > 65535 {
			errs = append(errs, fmt.Errorf("proxy.pmtu_overrides %q: MTU %v: want 576..65535", key, v))
			return
		}
		p, err := netip.ParsePrefix(key)
		if err != nil {
			a, aerr := netip.ParseAddr(key)
			if aerr != nil {
				errs = append(errs, fmt.Errorf("proxy.pmtu_overrides %q: %v", key, err))
				return
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, prefixMTU{Prefix: p.Masked(), MTU: mtu})
	}
	switch x := v.(type) {
	case nil:
	case map[string]any, map[any]any:
		walk("", x)
	case map[string]int:
		for k, vv := range x {
			walk(k, vv)
		}
	case map[netip.Prefix]int:
		for k, vv := range x {
			walk(k.String(), vv)
		}
	case []any:
		for i, e := range x {
			switch y := e.(type) {
			case string:
				k, m, ok := strings.Cut(y, "=")
				if !ok {
					errs = append(errs, fmt.Errorf("proxy.pmtu_overrides[%d] %q: want prefix=mtu", i, y))
					continue
				}
				walk(strings.TrimSpace(k), strings.TrimSpace(m))
			case map[string]any:
				walk(fmt.Sprint(y["prefix"]), y["mtu"])
			case map[any]any:
				walk(fmt.Sprint(y["prefix"]), y["mtu"])
			default:
				errs = append(errs, fmt.Errorf("proxy.pmtu_overrides[%d]: %T", i, e))
			}
		}
	default:
		errs = append(errs, fmt.Errorf("proxy.pmtu_overrides: %T: want a map or a list", v))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Prefix.Bits() != out[j].Prefix.Bits() {
			return out[i].Prefix.Bits() > out[j].Prefix.Bits()
		}
		return out[i].Prefix.String() < out[j].Prefix.String()
	})
	return out, errors.Join(errs...)
}

// parseStepDown reads proxy.pmtu_step_down: a bool, or a decreasing list
// of sizes (the ladder).
func parseStepDown(v any) (bool, []int, error) {
	switch x := v.(type) {
	case nil:
		return false, stepLadder, nil
	case bool:
		return x, stepLadder, nil
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(x))
		if err != nil {
			return false, nil, fmt.Errorf("proxy.pmtu_step_down %q: want a bool or a list of sizes", x)
		}
		return b, stepLadder, nil
	case []int:
		return parseStepDown(toAnys(x))
	case []any:
		var ladder []int
		for i, e := range x {
			n, err := toInt(e)
			if err != nil || n < 576 || n > 65535 {
				return false, nil, fmt.Errorf("proxy.pmtu_step_down[%d] %v: want a size of 576..65535", i, e)
			}
			if len(ladder) > 0 && n >= ladder[len(ladder)-1] {
				return false, nil, fmt.Errorf("proxy.pmtu_step_down[%d] %d: sizes must decrease", i, n)
			}
			ladder = append(ladder, n)
		}
		return len(ladder) > 0, ladder, nil
	}
	return false, nil, fmt.Errorf("proxy.pmtu_step_down: %T: want a bool or a list of sizes", v)
}

func toAnys(x []int) []any {
	out := make([]any, len(x))
	for i, v := range x {
		out[i] = v
	}
	return out
}

func joinKey(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

func toInt(v any) (int, error) {
	switch x := v.(type) {
	case int:
		return x, nil
	case int64:
		return int(x), nil
	case uint64:
		return int(x), nil
	case float64:
		return int(x), nil
	case string:
		return strconv.Atoi(strings.TrimSpace(x))
	}
	return 0, fmt.Errorf("%T", v)
}

// override returns the MTU of the longest override prefix holding a.
func (s *settings) override(a netip.Addr) (int, bool) {
	for _, o := range s.overrides {
		if o.Prefix.Contains(a) {
			return o.MTU, true
		}
	}
	return 0, false
}
