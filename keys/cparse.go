package keys

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// DeviceKeys is what a device's keys.h gives it.
type DeviceKeys struct {
	DeviceID    string // "" if the header has none
	HMACPSK     string // the device key's hex text; "" if none
	ServerURL   string
	PublicKey   *PublicKey
	FirmwareKey FirmwareKey
}

var (
	cStringDef = regexp.MustCompile(`static const char ([A-Z_]+)\[\] =((?:\s*"(?:[^"\\]|\\.)*")+)\s*;`)
	cLiteral   = regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`)
	cBytesDef  = regexp.MustCompile(`static const uint8_t ([A-Z_]+)\[(\d+)\] = \{([^}]*)\};`)
)

// ParseDeviceHeader reads a keys.h written by DeviceHeader, as the simulated
// device does to get the same keys a real device is built with.
func ParseDeviceHeader(data []byte) (*DeviceKeys, error) {
	text := string(data)
	strs := map[string]string{}
	for _, m := range cStringDef.FindAllStringSubmatch(text, -1) {
		var b strings.Builder
		for _, lit := range cLiteral.FindAllStringSubmatch(m[2], -1) {
			s, err := cUnquote(lit[1])
			if err != nil {
				return nil, fmt.Errorf("keys.h: %s: %w", m[1], err)
			}
			b.WriteString(s)
		}
		strs[m[1]] = b.String()
	}
	k := &DeviceKeys{DeviceID: strs["DEVICE_ID"], HMACPSK: strs["HMAC_PSK"], ServerURL: strs["OTA_SERVER_URL"]}
	pem, ok := strs["SERVER_PUBLIC_KEY"]
	if !ok {
		return nil, errors.New("keys.h has no SERVER_PUBLIC_KEY")
	}
	pub, err := ParsePublicKey([]byte(pem))
	if err != nil {
		return nil, fmt.Errorf("keys.h SERVER_PUBLIC_KEY: %w", err)
	}
	k.PublicKey = pub
	found := false
	for _, m := range cBytesDef.FindAllStringSubmatch(text, -1) {
		if m[1] != "AES_FIRMWARE_KEY" {
			continue
		}
		var raw []byte
		for _, f := range strings.FieldsFunc(m[3], func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' }) {
			v, err := strconv.ParseUint(f, 0, 8)
			if err != nil {
				return nil, fmt.Errorf("keys.h AES_FIRMWARE_KEY: %q is not a byte", f)
			}
			raw = append(raw, byte(v))
		}
		if len(raw) != FirmwareKeySize || m[2] != strconv.Itoa(FirmwareKeySize) {
			return nil, fmt.Errorf("keys.h AES_FIRMWARE_KEY has %d bytes, want %d", len(raw), FirmwareKeySize)
		}
		copy(k.FirmwareKey[:], raw)
		found = true
	}
	if !found {
		return nil, errors.New("keys.h has no AES_FIRMWARE_KEY")
	}
	return k, nil
}

// cUnquote decodes the escapes cQuote writes, and C's common ones.
func cUnquote(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		i++
		if i >= len(s) {
			return "", errors.New("string ends in a backslash")
		}
		switch e := s[i]; e {
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case '"', '\\', '?', '\'':
			b.WriteByte(e)
		default:
			if e < '0' || e > '7' {
				return "", fmt.Errorf("unknown escape \\%c", e)
			}
			v := 0
			for j := 0; j < 3 && i < len(s) && s[i] >= '0' && s[i] <= '7'; j++ {
				v = v*8 + int(s[i]-'0')
				i++
			}
			i--
			b.WriteByte(byte(v))
		}
	}
	return b.String(), nil
}
