package samtemplate

import (
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// The template is built as a tree of the values below and printed by hand,
// so the layout (comments, blank lines, flow lists, wrapped descriptions)
// stays the way a person would write it. Scalars are quoted by yaml.v3, so
// the quoting is always what a YAML parser reads back; a test parses the
// output again and compares it with the tree.

// mapping is a block mapping whose keys keep their order.
type mapping []field

// field is one key of a mapping.
type field struct {
	key     string
	value   any
	comment string // "# …" lines above the key (without the "#")
	gap     bool   // a blank line above the key (and its comment)
}

// list is a block sequence ("- item" lines).
type list []any

// flow is a flow sequence of scalars ([a, b, c]).
type flow []any

// tagged is a short-form intrinsic function: !Ref X, !GetAtt X.Arn,
// !Sub "…", !If [c, a, b]. value is a string, a flow, or a list (printed
// as a block sequence, for arguments that are mappings).
type tagged struct {
	tag   string
	value any
}

// folded is a long string printed as a folded block scalar (>-), wrapped.
type folded string

// quoted is a string that is always printed double-quoted.
type quoted string

func ref(id string) tagged { return tagged{"!Ref", id} }
func getAtt(id, attr string) tagged {
	return tagged{"!GetAtt", id + "." + attr}
}
func sub(format string) tagged { return tagged{"!Sub", quoted(format)} }

// add appends a field and returns the mapping, for building in one expression.
func (m *mapping) add(key string, value any) *field {
	*m = append(*m, field{key: key, value: value})
	return &(*m)[len(*m)-1]
}

// wrapWidth is where folded text and comments are wrapped.
const wrapWidth = 78

// printer writes the tree.
type printer struct {
	b strings.Builder
}

func (p *printer) line(indent int, s string) {
	p.b.WriteString(strings.Repeat(" ", indent))
	p.b.WriteString(s)
	p.b.WriteByte('\n')
}

// comment writes text as "# " lines, wrapped, at indent.
func (p *printer) comment(indent int, text string) {
	for _, para := range strings.Split(text, "\n") {
		for _, l := range wrap(para, wrapWidth-indent-2) {
			if l == "" {
				p.line(indent, "#")
			} else {
				p.line(indent, "# "+l)
			}
		}
	}
}

// wrap splits text into lines of at most width characters (longer words
// stay whole).
func wrap(text string, width int) []string {
	words := strings.Fields(text)
	if len(words) == 0 {
		return []string{""}
	}
	var out []string
	cur := words[0]
	for _, w := range words[1:] {
		if len(cur)+1+len(w) > width {
			out = append(out, cur)
			cur = w
			continue
		}
		cur += " " + w
	}
	return append(out, cur)
}

// mapping writes m's fields at indent.
func (p *printer) mapping(indent int, m mapping) error {
	for _, f := range m {
		if f.gap {
			p.b.WriteByte('\n')
		}
		if f.comment != "" {
			p.comment(indent, f.comment)
		}
		if err := p.entry(indent, scalar(f.key)+":", f.value); err != nil {
			return fmt.Errorf("%s: %w", f.key, err)
		}
	}
	return nil
}

// entry writes "head value", where head is "key:" or "-": scalars on the
// same line, collections below it.
func (p *printer) entry(indent int, head string, v any) error {
	switch x := v.(type) {
	case mapping:
		if len(x) == 0 {
			p.line(indent, head+" {}")
			return nil
		}
		if head == "-" {
			// The first key goes on the dash's line.
			var sub printer
			if err := sub.mapping(0, x); err != nil {
				return err
			}
			for i, l := range strings.Split(strings.TrimSuffix(sub.b.String(), "\n"), "\n") {
				switch {
				case i == 0:
					p.line(indent, "- "+l)
				case l == "":
					p.b.WriteByte('\n')
				default:
					p.line(indent+2, l)
				}
			}
			return nil
		}
		p.line(indent, head)
		return p.mapping(indent+2, x)
	case list:
		if len(x) == 0 {
			p.line(indent, head+" []")
			return nil
		}
		p.line(indent, head)
		for i, e := range x {
			if err := p.entry(indent+2, "-", e); err != nil {
				return fmt.Errorf("[%d]: %w", i, err)
			}
		}
		return nil
	case tagged:
		if l, ok := x.value.(list); ok {
			// A function whose arguments are not all scalars (!If with
			// mappings): the tag, then the arguments as a block sequence.
			p.line(indent, head+" "+x.tag)
			for i, e := range l {
				if err := p.entry(indent+2, "-", e); err != nil {
					return fmt.Errorf("%s[%d]: %w", x.tag, i, err)
				}
			}
			return nil
		}
		s, err := inline(x)
		if err != nil {
			return err
		}
		p.line(indent, head+" "+s)
		return nil
	case folded:
		lines := wrap(string(x), wrapWidth-indent-2)
		if strings.Join(lines, " ") != string(x) || strings.TrimSpace(string(x)) == "" {
			// Folding would not give the same text back; quote it instead.
			p.line(indent, head+" "+scalar(string(x)))
			return nil
		}
		p.line(indent, head+" >-")
		for _, l := range lines {
			p.line(indent+2, l)
		}
		return nil
	default:
		s, err := inline(v)
		if err != nil {
			return err
		}
		p.line(indent, head+" "+s)
		return nil
	}
}

// inline formats a value that fits on one line.
func inline(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return scalar(x), nil
	case quoted:
		return strconv.Quote(string(x)), nil
	case int:
		return strconv.Itoa(x), nil
	case bool:
		return strconv.FormatBool(x), nil
	case tagged:
		s, err := inline(x.value)
		if err != nil {
			return "", err
		}
		return x.tag + " " + s, nil
	case flow:
		parts := make([]string, len(x))
		for i, e := range x {
			s, err := inline(e)
			if err != nil {
				return "", err
			}
			parts[i] = s
		}
		return "[" + strings.Join(parts, ", ") + "]", nil
	default:
		return "", fmt.Errorf("cannot print %T on one line", v)
	}
}

// scalar formats a string the way yaml.v3 would: plain when a parser reads
// it back as the same string, quoted otherwise.
func scalar(s string) string {
	if strings.ContainsAny(s, "\n\r") {
		return strconv.Quote(s)
	}
	out, err := yaml.Marshal(&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s})
	if err != nil {
		return strconv.Quote(s)
	}
	text := strings.TrimSuffix(string(out), "\n")
	if strings.Contains(text, "\n") {
		return strconv.Quote(s)
	}
	return text
}

// render prints a whole document: header comment lines, then the top-level
// mapping.
func render(header string, doc mapping) ([]byte, error) {
	var p printer
	p.comment(0, header)
	p.b.WriteByte('\n')
	if err := p.mapping(0, doc); err != nil {
		return nil, err
	}
	return []byte(p.b.String()), nil
}
