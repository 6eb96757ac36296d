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
    c |= 0x20; /* A-F to a-f; no other character lands in a-f */
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
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
    size_t pad = len && in[len - 1] == '=' ? 1 + (in[len - 2] == '=') : 0, o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len - pad; i++) {
        int v = b64val(in[i]); /* '=' before the padding is malformed too */
        if (v < 0) return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    /* Strict: the bits padding drops must be zero (one encoding per value). */
    return acc & ((1u << bits) - 1) ? -1 : (int32_t)o;
}

/* ---- JSON ---- */

#define JSON_MAX_DEPTH 8
#define JSON_MAX_MEMBERS 24

/* The scanners below take the text at p (up to end) and return where what
 * they scanned ends, or NULL when it is malformed. */

static const char *ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* A string, p at its opening quote: ends past the closing one; *esc says
 * whether it holds escapes. */
static const char *string_end(const char *p, const char *end, bool *esc)
{
    *esc = false;
    while (++p < end) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"') return p + 1;
        if (ch < 0x20) return NULL;
        if (ch == '\\') {
            *esc = true;
            if (++p >= end) return NULL;
            /* No library calls here: a leaf function saves no registers. */
            if (*p == 'u') {
                if (end - p < 5) return NULL;
                for (int k = 1; k <= 4; k++) {
                    char h = (char)(p[k] | 0x20);
                    if (!((p[k] >= '0' && p[k] <= '9') || (h >= 'a' && h <= 'f'))) return NULL;
                }
                p += 4;
            } else {
                static const char escapes[] = "\"\\/bfnrt";
                const char *e = escapes;
                while (*e && *e != *p) e++;
                if (!*e) return NULL;
            }
        }
    }
    return NULL;
}

/* One or more digits. */
static const char *digits(const char *p, const char *end)
{
    const char *start = p;
    while (p < end && *p >= '0' && *p <= '9') p++;
    return p > start ? p : NULL;
}

/* A nested object or array, skipped without recursion: brackets must match
 * and strings be well formed; what is inside is not checked further, since
 * the client reads no value from inside one (it only finds "v2" in
 * chunk_macs). */
static const char *container_end(const char *p, const char *end)
{
    char stack[JSON_MAX_DEPTH];
    int depth = 0;
    bool esc;
    while (p && p < end) {
        char ch = *p;
        if (ch == '"') {
            p = string_end(p, end, &esc);
            continue;
        }
        if (ch == '{' || ch == '[') {
            if (depth == JSON_MAX_DEPTH) return NULL;
            stack[depth++] = (char)(ch + 2); /* '{' + 2 is '}', '[' + 2 is ']' */
        } else if (ch == '}' || ch == ']') {
            if (depth == 0 || stack[--depth] != ch) return NULL;
            if (depth == 0) return p + 1;
        }
        p++;
    }
    return NULL;
}

/* A value: its type and text into v. */
static const char *value_end(const char *p, const char *end, fota_json_t *v)
{
    static const char words[] = "true\0false\0null";
    bool esc;
    char ch = *p;
    v->p = p;
    if (ch == '"') {
        v->type = FOTA_J_STRING;
        v->p = p + 1;
        if (!(p = string_end(p, end, &esc))) return NULL;
        v->n = (size_t)(p - 1 - v->p);
        return p;
    }
    if (ch == '{' || ch == '[') {
        v->type = ch == '{' ? FOTA_J_OBJECT : FOTA_J_ARRAY;
        p = container_end(p, end);
    } else if (ch == 't' || ch == 'f' || ch == 'n') {
        const char *w = words + (ch == 't' ? 0 : ch == 'f' ? 5 : 11);
        size_t n = strlen(w);
        v->type = ch == 't' ? FOTA_J_TRUE : ch == 'f' ? FOTA_J_FALSE : FOTA_J_NULL;
        if ((size_t)(end - p) < n || memcmp(p, w, n) != 0) return NULL;
        p += n;
    } else {
        v->type = FOTA_J_NUMBER;
        if (*p == '-') p++;
        if (p < end && *p == '0') p++;
        else p = digits(p, end);
        if (p && p < end && *p == '.') p = digits(p + 1, end);
        if (p && p < end && (*p == 'e' || *p == 'E')) {
            if (++p < end && (*p == '+' || *p == '-')) p++;
            p = digits(p, end);
        }
    }
    if (p) v->n = (size_t)(p - v->p);
    return p;
}

bool fota_json_object(const char *js, size_t len, fota_json_member_fn fn, void *user)
{
    const char *p = ws(js, js + len), *end = js + len;
    const char *keys[JSON_MAX_MEMBERS];
    int members = 0;
    if (p >= end || *p++ != '{') return false;
    p = ws(p, end);
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            const char *k;
            size_t kn;
            bool esc;
            fota_json_t v;
            p = ws(p, end);
            if (p >= end || *p != '"' || !(k = string_end(p, end, &esc)) || esc || members == JSON_MAX_MEMBERS)
                return false;
            kn = (size_t)(k - p - 2);
            k = p + 1;
            /* A key has no escapes, so its closing quote ends it: the same key
             * is the same kn bytes and quote. An earlier key lies before k, so
             * kn + 1 bytes from it are inside the text. */
            for (int i = 0; i < members; i++)
                if (memcmp(keys[i], k, kn + 1) == 0) return false;
            keys[members++] = k;
            p = ws(k + kn + 1, end);
            if (p >= end || *p++ != ':') return false;
            p = ws(p, end);
            if (p >= end || !(p = value_end(p, end, &v)) || !fn(user, k, kn, &v)) return false;
            p = ws(p, end);
            if (p >= end) return false;
            if (*p == ',') {
                p++;
                continue;
            }
            if (*p++ != '}') return false;
            break;
        }
    }
    return ws(p, end) == end;
}

bool fota_json_uint(const fota_json_t *v, uint32_t min, uint32_t max, uint32_t *out)
{
    if (v->type != FOTA_J_NUMBER || (v->n > 1 && v->p[0] == '0')) return false;
    uint32_t x = 0;
    for (size_t i = 0; i < v->n; i++) {
        uint32_t d = (uint32_t)(v->p[i] - '0');
        if (d > 9 || d > max || x > (max - d) / 10) return false;
        x = x * 10 + d;
    }
    if (x < min) return false;
    *out = x;
    return true;
}

bool fota_json_str(const fota_json_t *v, char *out, size_t cap)
{
    /* Loops, not memchr and memcpy: a leaf function saves no registers. */
    if (v->type != FOTA_J_STRING || v->n >= cap) return false;
    for (size_t i = 0; i < v->n; i++)
        if (v->p[i] == '\\') return false;
    for (size_t i = 0; i < v->n; i++) out[i] = v->p[i];
    out[v->n] = 0;
    return true;
}

/* ---- SemVer 2.0.0 ---- */

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static bool ident_char(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
}

/* Whether the n digits at s fit 64 bits, as the server's parser needs.
 * (No library call: semver_split stays a leaf function, which saves no
 * registers.) */
static bool fits64(const char *s, int n)
{
    static const char max[] = "18446744073709551615";
    int k = 0;
    if (n != 20) return n < 20;
    while (k < 20 && s[k] == max[k]) k++;
    return k == 20 || s[k] < max[k];
}

/* Checks v by SemVer 2.0.0 (core numbers without leading zeros and within
 * 64 bits, as the server's parser needs; prerelease identifiers, numeric
 * ones without leading zeros; build identifiers) and at most
 * FOTA_VERSION_MAX characters; sets the end of the core and of the
 * prerelease (the same when there is none). */
static bool semver_split(const char *v, int *core_end, int *pre_end)
{
    int part = 0, start = 0; /* part: 0-2 the core's numbers, 3 the prerelease, 4 the build */
    bool numeric = true;
    for (int i = 0;; i++) {
        char ch = v[i];
        if (part < 3 ? is_digit(ch) : ident_char(ch)) {
            numeric = numeric && is_digit(ch);
            continue;
        }
        /* The end of an identifier. */
        int n = i - start;
        if (n == 0 || (part < 4 && numeric && v[start] == '0' && n > 1) || (part < 3 && !fits64(v + start, n)))
            return false;
        if (part < 2) {
            if (ch != '.') return false;
            part++;
        } else if (ch != '.' || part == 2) {
            if (part == 2) *core_end = i;
            if (part < 4) *pre_end = i;
            if (ch == '-' && part == 2) part = 3;
            else if (ch == '+' && part < 4) part = 4;
            else return ch == 0 && i <= FOTA_VERSION_MAX;
        }
        start = i + 1;
        numeric = true;
    }
}

bool fota_semver_valid(const char *v)
{
    int a, b;
    return semver_split(v, &a, &b);
}

/* Precedence of two valid identifier lists (an bytes at a, bn at b):
 * numeric identifiers by value, below alphanumeric ones, which compare in
 * ASCII; a list that is a prefix of the other ranks below it. */
static int cmp_ids(const char *a, int an, const char *b, int bn)
{
    for (int i = 0, j = 0;; i++, j++) {
        if (i >= an || j >= bn) return (i < an) - (j < bn);
        int si = i, sj = j, r;
        bool anum = true, bnum = true;
        for (; i < an && a[i] != '.'; i++) anum = anum && is_digit(a[i]);
        for (; j < bn && b[j] != '.'; j++) bnum = bnum && is_digit(b[j]);
        int la = i - si, lb = j - sj;
        r = (int)bnum - (int)anum;
        /* Without leading zeros, the longer number is the larger. */
        if (!r && anum) r = la - lb;
        for (int k = 0; !r && k < la && k < lb; k++) r = (unsigned char)a[si + k] - (unsigned char)b[sj + k];
        if (!r) r = la - lb;
        if (r) return (r > 0) - (r < 0);
    }
}

int fota_semver_cmp(const char *a, const char *b)
{
    int ac, ap, bc, bp;
    if (!semver_split(a, &ac, &ap) || !semver_split(b, &bc, &bp)) return -2;
    int r = cmp_ids(a, ac, b, bc);
    if (r) return r;
    /* A version without a prerelease ranks above one with. */
    if (ap == ac || bp == bc) return (ap == ac) - (bp == bc);
    return cmp_ids(a + ac + 1, ap - ac - 1, b + bc + 1, bp - bc - 1);
}

/* ---- Times ---- */

/* Reads s laid out as pat: a digit 0-5 in pat is a digit of s that goes
 * into t[that digit] (year, month, day, hour, minute, second), '*' any
 * character, anything else itself. t starts zeroed. */
static bool scan(const char *s, const char *pat, int *t)
{
    for (; *pat; pat++, s++) {
        if (*pat >= '0' && *pat <= '5') {
            if (!is_digit(*s)) return false;
            t[*pat - '0'] = t[*pat - '0'] * 10 + (*s - '0');
        } else if (*pat != '*' && *s != *pat) {
            return false;
        }
    }
    return true;
}

/* Unix seconds of the civil time t (see scan); false when out of range.
 * Days from Howard Hinnant's days_from_civil (proleptic Gregorian), on
 * years moved up by 400 (one era) so that none is negative. */
static bool civil(const int *t, int64_t *out)
{
    static const uint8_t mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    unsigned m = (unsigned)t[1], d = (unsigned)t[2];
    bool leap = t[0] % 4 == 0 && (t[0] % 100 != 0 || t[0] % 400 == 0);
    if (m - 1 > 11 || d < 1 || d > (unsigned)(mdays[m - 1] - (m == 2 && !leap)) || t[3] > 23 || t[4] > 59 || t[5] > 60) return false;
    unsigned y = (unsigned)t[0] + 400 - (m <= 2), yoe = y % 400;
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int32_t days = (int32_t)(y / 400 * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy) - 719468 - 146097;
    *out = (int64_t)days * 86400 + (t[3] * 3600 + t[4] * 60 + t[5]);
    return true;
}

bool fota_parse_rfc3339(const char *s, size_t len, int64_t *out)
{
    int t[6] = {0, 0, 0, 0, 0, 0};
    if (len < 20 || !scan(s, "0000-11-22T33:44:55", t) || !civil(t, out)) return false;
    size_t i = 19;
    if (s[i] == '.') {
        /* Fractions of a second: an install window bound is whole seconds late at most. */
        size_t start = ++i;
        while (i < len && is_digit(s[i])) i++;
        if (i == start) return false;
    }
    /* UTC only: the server writes "Z" (docs/PROTOCOL.md, docs/FORMAT.md). */
    return i + 1 == len && s[i] == 'Z';
}

int64_t fota_parse_http_date(const char *s)
{
    /* IMF-fixdate, what every HTTP/1.1 server sends: "Sun, 06 Nov 1994 08:49:37 GMT". */
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    int t[6] = {0, 0, 0, 0, 0, 0};
    int64_t x;
    if (!s || strlen(s) != 29 || !scan(s, "***, 22 *** 0000 33:44:55 GMT", t)) return 0;
    while (t[1] < 12 && memcmp(months + 3 * t[1], s + 8, 3) != 0) t[1]++;
    t[1]++; /* 13 when no month matched: civil refuses it */
    return civil(t, &x) ? x : 0;
}
