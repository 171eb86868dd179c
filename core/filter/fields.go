package filter

import (
	"encoding/json"
	"strings"
)

// splitPath parses a dot-separated property path (spec appendix "Dot-separated
// property paths"): `.` separates keys, `\.` is a literal dot and `\\` a
// literal backslash. Empty keys are not allowed.
func splitPath(p string) ([]string, bool) {
	if p == "" {
		return nil, false
	}
	var segs []string
	var cur strings.Builder
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == '\\' && i+1 < len(p) && (p[i+1] == '.' || p[i+1] == '\\'):
			cur.WriteByte(p[i+1])
			i++
		case c == '.':
			if cur.Len() == 0 {
				return nil, false
			}
			segs = append(segs, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	if cur.Len() == 0 {
		return nil, false
	}
	return append(segs, cur.String()), true
}

// Project keeps only the listed fields of a JSON object (event_fields).
// Fields that are missing are skipped; an empty list keeps everything.
func Project(obj json.RawMessage, fields []string) json.RawMessage {
	if len(fields) == 0 {
		return obj
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(obj, &top) != nil {
		return obj
	}
	out := map[string]any{}
	for _, f := range fields {
		segs, ok := splitPath(f)
		if !ok {
			continue
		}
		cur := top
		for i, seg := range segs {
			v, ok := cur[seg]
			if !ok {
				break
			}
			if i == len(segs)-1 {
				setPath(out, segs, v)
				break
			}
			var next map[string]json.RawMessage
			if json.Unmarshal(v, &next) != nil {
				break
			}
			cur = next
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return obj
	}
	return b
}

func setPath(out map[string]any, segs []string, v json.RawMessage) {
	m := out
	for _, seg := range segs[:len(segs)-1] {
		if _, whole := m[seg].(json.RawMessage); whole {
			return // a shorter path already keeps the whole object
		}
		next, ok := m[seg].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[seg] = next
		}
		m = next
	}
	m[segs[len(segs)-1]] = v
}
