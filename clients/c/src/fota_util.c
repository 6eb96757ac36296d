/*
 * Text handling for the fota C client: hex, base64, a strict JSON object
 * walker, SemVer precedence and the two time formats the server sends. No
 * allocation, bounded recursion.
 */
#include <string.h>

#include "fota_internal.h"

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

void fota_hex(char *out, const uint8_t *in, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = 0;
}

bool fota_unhex(uint8_t *out, size_t n, const char *s, size_t len)
{
    if (len != 2 * n) return false;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

int32_t fota_base64_decode(uint8_t *out, const char *in, size_t len)
{
    /* Output never overtakes input (3 bytes out per 4 in), so in place works. */
    if (len % 4 != 0) return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            char c = in[i + k];
            if (c == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad) return -1; /* data after padding */
            v[k] = b64val(c);
            if (v[k] < 0) return -1;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        /* Strict: the bits padding drops must be zero (one encoding per value). */
        if ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff))) return -1;
        out[o++] = (uint8_t)(w >> 16);
        if (pad < 2) out[o++] = (uint8_t)(w >> 8);
        if (pad < 1) out[o++] = (uint8_t)w;
    }
    return (int32_t)o;
}

/* ---- JSON ---- */

#define JSON_MAX_DEPTH 8
#define JSON_MAX_MEMBERS 24

typedef struct {
    const char *p, *end;
} cursor_t;

static void ws(cursor_t *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

/* Scans a string at c->p (the opening quote); sets its text span and
 * whether it holds escapes. */
static bool scan_string(cursor_t *c, const char **s, size_t *n, bool *escaped)
{
    c->p++;
    *s = c->p;
    *escaped = false;
    while (c->p < c->end) {
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '"') {
            *n = (size_t)(c->p - *s);
            c->p++;
            return true;
        }
        if (ch < 0x20) return false;
        if (ch == '\\') {
            *escaped = true;
            if (++c->p >= c->end) return false;
            if (*c->p == 'u') {
                if (c->end - c->p < 5) return false;
                for (int k = 1; k <= 4; k++)
                    if (hexval(c->p[k]) < 0) return false;
                c->p += 4;
            } else if (!strchr("\"\\/bfnrt", *c->p)) {
                return false;
            }
        }
        c->p++;
    }
    return false;
}

static bool digits(cursor_t *c)
{
    const char *start = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') c->p++;
    return c->p > start;
}

static bool literal(cursor_t *c, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0) return false;
    c->p += n;
    return true;
}

/* Skips a nested object or array without recursion: brackets must match
 * and strings be well formed; what is inside is not checked further, since
 * the client reads no value from inside one (it only finds "v2" in
 * chunk_macs). */
static bool skip_container(cursor_t *c)
{
    char stack[JSON_MAX_DEPTH];
    int depth = 0;
    const char *s;
    size_t n;
    bool esc;
    while (c->p < c->end) {
        char ch = *c->p;
        if (ch == '"') {
            if (!scan_string(c, &s, &n, &esc)) return false;
            continue;
        }
        if (ch == '{' || ch == '[') {
            if (depth == JSON_MAX_DEPTH) return false;
            stack[depth++] = ch == '{' ? '}' : ']';
        } else if (ch == '}' || ch == ']') {
            if (depth == 0 || stack[--depth] != ch) return false;
            if (depth == 0) {
                c->p++;
                return true;
            }
        }
        c->p++;
    }
    return false;
}

static bool scan_value(cursor_t *c, fota_json_t *v)
{
    if (c->p >= c->end) return false;
    const char *start = c->p;
    bool esc;
    switch (*c->p) {
    case '"':
        v->type = FOTA_J_STRING;
        return scan_string(c, &v->p, &v->n, &esc);
    case '{':
    case '[':
        v->type = *c->p == '{' ? FOTA_J_OBJECT : FOTA_J_ARRAY;
        if (!skip_container(c)) return false;
        break;
    case 't':
        v->type = FOTA_J_TRUE;
        if (!literal(c, "true")) return false;
        break;
    case 'f':
        v->type = FOTA_J_FALSE;
        if (!literal(c, "false")) return false;
        break;
    case 'n':
        v->type = FOTA_J_NULL;
        if (!literal(c, "null")) return false;
        break;
    default:
        v->type = FOTA_J_NUMBER;
        if (*c->p == '-') c->p++;
        if (c->p < c->end && *c->p == '0') {
            c->p++;
        } else if (!digits(c)) {
            return false;
        }
        if (c->p < c->end && *c->p == '.') {
            c->p++;
            if (!digits(c)) return false;
        }
        if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
            c->p++;
            if (c->p < c->end && (*c->p == '+' || *c->p == '-')) c->p++;
            if (!digits(c)) return false;
        }
    }
    v->p = start;
    v->n = (size_t)(c->p - start);
    return true;
}

bool fota_json_object(const char *js, size_t len, fota_json_member_fn fn, void *user)
{
    cursor_t c = {js, js + len};
    const char *keys[JSON_MAX_MEMBERS];
    size_t key_lens[JSON_MAX_MEMBERS];
    int members = 0;
    ws(&c);
    if (c.p >= c.end || *c.p++ != '{') return false;
    ws(&c);
    if (c.p < c.end && *c.p == '}') {
        c.p++;
    } else {
        for (;;) {
            const char *k;
            size_t kn;
            bool esc;
            fota_json_t v;
            ws(&c);
            if (c.p >= c.end || *c.p != '"' || !scan_string(&c, &k, &kn, &esc) || esc) return false;
            if (members == JSON_MAX_MEMBERS) return false;
            for (int i = 0; i < members; i++)
                if (key_lens[i] == kn && memcmp(keys[i], k, kn) == 0) return false;
            keys[members] = k;
            key_lens[members++] = kn;
            ws(&c);
            if (c.p >= c.end || *c.p++ != ':') return false;
            ws(&c);
            if (!scan_value(&c, &v) || !fn(user, k, kn, &v)) return false;
            ws(&c);
            if (c.p >= c.end) return false;
            if (*c.p == ',') {
                c.p++;
                continue;
            }
            if (*c.p++ != '}') return false;
            break;
        }
    }
    ws(&c);
    return c.p == c.end;
}

bool fota_json_uint(const fota_json_t *v, uint64_t max, uint64_t *out)
{
    if (v->type != FOTA_J_NUMBER || v->n == 0 || v->n > 20 || (v->n > 1 && v->p[0] == '0')) return false;
    uint64_t x = 0;
    for (size_t i = 0; i < v->n; i++) {
        if (v->p[i] < '0' || v->p[i] > '9') return false;
        uint64_t d = (uint64_t)(v->p[i] - '0');
        if (x > (max - d) / 10) return false;
        x = x * 10 + d;
    }
    *out = x;
    return true;
}

bool fota_json_str(const fota_json_t *v, char *out, size_t cap)
{
    if (v->type != FOTA_J_STRING || v->n >= cap || memchr(v->p, '\\', v->n)) return false;
    memcpy(out, v->p, v->n);
    out[v->n] = 0;
    return true;
}

bool fota_json_is(const fota_json_t *v, const char *s)
{
    return v->type == FOTA_J_STRING && strlen(s) == v->n && memcmp(v->p, s, v->n) == 0;
}

/* ---- SemVer 2.0.0 ---- */

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static bool ident_char(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
}

/* Whether the n digits at s fit 64 bits, as the server's parser needs. */
static bool fits64(const char *s, int n)
{
    return n < 20 || (n == 20 && strncmp(s, "18446744073709551615", 20) <= 0);
}

/* Length of the dot-separated identifier list at s ending at a char in
 * stop; numeric identifiers must not have leading zeros when strict. -1 if
 * malformed. */
static int ident_list(const char *s, const char *stop, bool strict)
{
    int i = 0;
    for (;;) {
        int start = i;
        bool numeric = true;
        while (s[i] && !strchr(stop, s[i]) && s[i] != '.') {
            if (!ident_char(s[i])) return -1;
            numeric = numeric && is_digit(s[i]);
            i++;
        }
        if (i == start) return -1;
        if (strict && numeric && s[start] == '0' && i - start > 1) return -1;
        if (s[i] != '.') return i;
        i++;
    }
}

/* Splits v: the end of the core, of the prerelease (pre_end == core_end when
 * none); false when invalid. */
static bool semver_split(const char *v, int *core_end, int *pre_end)
{
    int i = 0;
    for (int part = 0; part < 3; part++) {
        int start = i;
        while (is_digit(v[i])) i++;
        if (i == start || (v[start] == '0' && i - start > 1) || !fits64(v + start, i - start)) return false;
        if (part < 2 && v[i++] != '.') return false;
    }
    *core_end = *pre_end = i;
    if (v[i] == '-') {
        int n = ident_list(v + i + 1, "+", true);
        if (n < 0) return false;
        i += 1 + n;
        *pre_end = i;
    }
    if (v[i] == '+') {
        int n = ident_list(v + i + 1, "", false);
        if (n < 0) return false;
        i += 1 + n;
    }
    return v[i] == 0 && i <= FOTA_VERSION_MAX;
}

bool fota_semver_valid(const char *v)
{
    int a, b;
    return semver_split(v, &a, &b);
}

/* Compares two runs of digits without leading zeros by value. */
static int cmp_num(const char *a, int an, const char *b, int bn)
{
    if (an != bn) return an < bn ? -1 : 1;
    int r = memcmp(a, b, (size_t)an);
    return r < 0 ? -1 : r > 0;
}

int fota_semver_cmp(const char *a, const char *b)
{
    int ac, ap, bc, bp;
    if (!semver_split(a, &ac, &ap) || !semver_split(b, &bc, &bp)) return -2;
    int i = 0, j = 0;
    for (int part = 0; part < 3; part++) {
        int si = i, sj = j;
        while (is_digit(a[i])) i++;
        while (is_digit(b[j])) j++;
        int r = cmp_num(a + si, i - si, b + sj, j - sj);
        if (r) return r;
        i++;
        j++;
    }
    /* A version without a prerelease ranks above one with. */
    if (ap == ac || bp == bc) return (ap == ac) - (bp == bc);
    i = ac + 1;
    j = bc + 1;
    for (;;) {
        if (i >= ap || j >= bp) return (i < ap) - (j < bp);
        int si = i, sj = j;
        bool an = true, bn = true;
        for (; i < ap && a[i] != '.'; i++) an = an && is_digit(a[i]);
        for (; j < bp && b[j] != '.'; j++) bn = bn && is_digit(b[j]);
        int r;
        if (an && bn) {
            r = cmp_num(a + si, i - si, b + sj, j - sj);
        } else if (an != bn) {
            r = an ? -1 : 1; /* numeric identifiers rank below alphanumeric ones */
        } else {
            int n = (i - si) < (j - sj) ? i - si : j - sj;
            r = memcmp(a + si, b + sj, (size_t)n);
            r = r < 0 ? -1 : r > 0 ? 1 : (i - si > j - sj) - (i - si < j - sj);
        }
        if (r) return r;
        i++;
        j++;
    }
}

/* ---- Times ---- */

int64_t fota_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    /* Howard Hinnant's days_from_civil, for the proleptic Gregorian calendar. */
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* Reads n digits at s; -1 if any is not one. */
static int num(const char *s, int n)
{
    int x = 0;
    for (int i = 0; i < n; i++) {
        if (!is_digit(s[i])) return -1;
        x = x * 10 + (s[i] - '0');
    }
    return x;
}

static bool civil(int y, int mo, int d, int h, int mi, int s, int64_t *out)
{
    static const uint8_t mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 0 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h < 0 || h > 23 || mi < 0 || mi > 59 || s < 0 ||
        s > 60)
        return false;
    *out = fota_days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + s;
    return true;
}

bool fota_parse_rfc3339(const char *s, size_t len, int64_t *out)
{
    if (len < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':')
        return false;
    if (!civil(num(s, 4), num(s + 5, 2), num(s + 8, 2), num(s + 11, 2), num(s + 14, 2), num(s + 17, 2), out))
        return false;
    size_t i = 19;
    if (s[i] == '.') {
        /* Fractions of a second: an install window bound is whole seconds late at most. */
        size_t start = ++i;
        while (i < len && is_digit(s[i])) i++;
        if (i == start) return false;
    }
    if (i + 1 == len && (s[i] == 'Z' || s[i] == 'z')) return true;
    if (i + 6 != len || (s[i] != '+' && s[i] != '-') || s[i + 3] != ':') return false;
    int h = num(s + i + 1, 2), m = num(s + i + 4, 2);
    if (h < 0 || h > 23 || m < 0 || m > 59) return false;
    int64_t offset = (int64_t)h * 3600 + m * 60;
    *out += s[i] == '+' ? -offset : offset;
    return true;
}

int64_t fota_parse_http_date(const char *s)
{
    /* IMF-fixdate, what every HTTP/1.1 server sends: "Sun, 06 Nov 1994 08:49:37 GMT". */
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    if (!s || strlen(s) != 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
        s[19] != ':' || s[22] != ':' || memcmp(s + 25, " GMT", 4) != 0)
        return 0;
    int mo = 0;
    while (mo < 12 && memcmp(months + 3 * mo, s + 8, 3) != 0) mo++;
    int64_t t;
    if (mo == 12 || !civil(num(s + 12, 4), mo + 1, num(s + 5, 2), num(s + 17, 2), num(s + 20, 2), num(s + 23, 2), &t))
        return 0;
    return t;
}
