package tooken

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// The print and printf of a name template. Go's fmt builds a whole result
// in memory before anything can check its length, and prints a map or a
// struct whole (the template's data, .EntityMetadata): so both take only
// scalars (strings, numbers, booleans), and both bound what they would
// write before they format. Every other function of a template returns one
// of its arguments, a part of one, or a bounded result (name_template.go).

// printArg is an argument of print or printf: a scalar and the bytes it
// prints as with %v (at most, for a number).
type printArg struct {
	size     int
	isString bool
}

const (
	// maxScalarPrint bounds what a number, a boolean or nil prints as with
	// %v (a complex128 is the longest, about 50 bytes).
	maxScalarPrint = 64
	// maxScalarPrintf bounds what one printf verb writes for a number, a
	// boolean or nil, at a width and precision of at most maxFormatWidth
	// (%.64f of the largest complex128 is about 760 bytes).
	maxScalarPrintf = 1024
)

// boundedPrint is Go's print over scalars, refused before formatting when
// they would print more than maxTemplateValue bytes.
func boundedPrint(args ...any) (string, error) {
	pa, err := printArgs("print", args)
	if err != nil {
		return "", err
	}
	size := len(pa) // a space may separate two operands
	for _, a := range pa {
		size += a.size
	}
	if err := checkOutput("print", size); err != nil {
		return "", err
	}
	out := fmt.Sprint(args...)
	return out, checkOutput("print", len(out))
}

// boundedPrintf is Go's printf without what could allocate without bound: a
// width or precision over maxFormatWidth or taken from an argument (*), an
// argument that is not a scalar, and a format and arguments that could
// write more than maxTemplateOutput bytes (printfBound); the result is then
// held to maxTemplateValue like any other.
func boundedPrintf(format string, args ...any) (string, error) {
	if err := checkInput("printf", format); err != nil {
		return "", err
	}
	if err := checkFormat(format); err != nil {
		return "", err
	}
	pa, err := printArgs("printf", args)
	if err != nil {
		return "", err
	}
	if printfBound(format, pa) > maxTemplateOutput {
		return "", fmt.Errorf("printf: the result could be longer than %d bytes (use a precision, such as %%.64s, on long values)", maxTemplateOutput)
	}
	out := fmt.Sprintf(format, args...)
	return out, checkOutput("printf", len(out))
}

// printArgs checks that every argument is a scalar (a string, a number, a
// boolean or nil) and sizes it.
func printArgs(fn string, args []any) ([]printArg, error) {
	out := make([]printArg, len(args))
	for i, a := range args {
		switch v := reflect.ValueOf(a); v.Kind() {
		case reflect.String:
			out[i] = printArg{size: v.Len(), isString: true}
		case reflect.Invalid, reflect.Bool,
			reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
			reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
			out[i] = printArg{size: maxScalarPrint}
		default:
			return nil, fmt.Errorf("%s: argument %d is a %s; only strings, numbers and booleans can be printed", fn, i+1, v.Kind())
		}
	}
	return out, nil
}

// verbSpec is one verb of a printf format: what follows a '%' up to the
// verb.
type verbSpec struct {
	verb          byte
	width, prec   int
	hasPrec, hash bool
	index         int // an explicit argument index [n]; 0 none, -1 a bad one
	n             int // the bytes of the format it takes after the '%'
}

// parseVerb reads a verb at the start of s, as fmt does: flags, argument
// indexes, width, precision, the verb. A verb missing at the end is '!'.
func parseVerb(s string) verbSpec {
	var v verbSpec
	num := &v.width
	for v.n < len(s) {
		c := s[v.n]
		v.n++
		switch {
		case c == '#':
			v.hash = true
		case c == '+' || c == '-' || c == ' ':
		case c >= '0' && c <= '9': // a leading 0 (the flag) adds nothing
			*num = *num*10 + int(c-'0')
		case c == '.':
			v.hasPrec, num = true, &v.prec
		case c == '[':
			k := strings.IndexByte(s[v.n:], ']')
			if k < 0 {
				v.index, v.n = -1, len(s)
				return v
			}
			if v.index, _ = strconv.Atoi(s[v.n : v.n+k]); v.index < 1 {
				v.index = -1
			}
			v.n += k + 1
		default:
			v.verb = c
			return v
		}
	}
	v.verb = '!'
	return v
}

// printfBound is an upper bound of the bytes fmt.Sprintf(format, args...)
// writes, for a format that passed checkFormat. It walks the format as fmt
// does: each verb takes the next argument, or the one an index names; an
// error in place of a verb (%!d(MISSING), %!(BADINDEX)) is short, and the
// arguments no verb took are printed after ("%!(EXTRA ...)").
func printfBound(format string, args []printArg) int {
	total, next := 0, 0
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			total++
			continue
		}
		v := parseVerb(format[i+1:])
		i += v.n
		switch {
		case v.verb == '%':
			total++
			continue
		case v.index > 0:
			next = v.index - 1
		}
		if v.index < 0 || v.verb == '!' || next >= len(args) {
			total += 32
			continue
		}
		total += verbBound(v, args[next])
		next++
	}
	for _, a := range args[min(next, len(args)):] {
		total += a.size + 32
	}
	return total + 16
}

// verbBound bounds what verb v writes for the argument a.
func verbBound(v verbSpec, a printArg) int {
	if !a.isString {
		return maxScalarPrintf
	}
	l := a.size
	if v.hasPrec {
		l = min(l, 4*v.prec) // a string's precision counts runes
	}
	switch {
	case v.verb == 's' || (v.verb == 'v' && !v.hash):
	case v.verb == 'q' || v.verb == 'v':
		l = 10*l + 2 // an escape is at most 10 bytes (\U0010ffff) per byte
	case v.verb == 'x' || v.verb == 'X':
		l = 5*l + 2 // "% #x": "0x41 " per byte
	default: // a verb strings do not take prints the whole value: %!d(string=...)
		l = a.size + 40
	}
	return max(l, v.width)
}

// checkFormat refuses a printf format with a '*' or with a number (width,
// precision or argument index) over maxFormatWidth.
func checkFormat(format string) error {
	n := 0
	inVerb := false
	for i := 0; i < len(format); i++ {
		c := format[i]
		switch {
		case !inVerb:
			inVerb, n = c == '%', 0
		case c == '*':
			return errors.New("printf: a width or precision from an argument (*) is not allowed")
		case c >= '0' && c <= '9':
			if n = n*10 + int(c-'0'); n > maxFormatWidth {
				return fmt.Errorf("printf: width or precision over %d", maxFormatWidth)
			}
		case strings.IndexByte("+-# .[]", c) >= 0:
			n = 0
		default: // the verb
			inVerb = false
		}
	}
	return nil
}
