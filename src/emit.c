/*
 * emit.c - the output buffer and the escapers that every renderer shares.
 *
 * A report, a notice and the TOTALS line are each built whole in one buffer
 * and written once (log.c).  Whatever goes into a line came from somewhere the
 * program or another process controls (paths, symbol names, option values), so
 * every value is escaped here, in one place: text lines show control bytes as
 * \n, \t or \xNN (no value can start a line without the ==PID== prefix),
 * SUMMARY values are quoted when they need to be, and JSON strings are valid
 * UTF-8 whatever bytes a module path holds (a byte that is not part of valid
 * UTF-8 is written as \u00XX, its value as a code point, so it can be read
 * back).  The JSON head of every record is written here too, once.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ef.h"

void ef_put(struct ef_out *o, const char *s, size_t n)
{
    if (!o->cap || o->len >= o->cap)
        return;
    if (o->len + n >= o->cap)
        n = o->cap - o->len - 1;
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = 0;
}

void ef_puts(struct ef_out *o, const char *s)
{
    ef_put(o, s, strlen(s));
}

void ef_putf(struct ef_out *o, const char *fmt, ...)
{
    char tmp[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        ef_put(o, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 when the byte at s does
 * not start one (overlong forms, surrogates and values past U+10FFFF are not
 * valid). */
static size_t utf8_len(const unsigned char *s)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t n;
    unsigned min, cp;
    if ((c & 0xe0) == 0xc0) {
        n = 2, min = 0x80, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        n = 3, min = 0x800, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        n = 4, min = 0x10000, cp = c & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) /* also stops at the NUL */
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

void ef_put_json_str(struct ef_out *o, const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    ef_puts(o, "\"");
    while (*s) {
        unsigned char c = *s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            ef_put(o, e, 2);
            s++;
        } else if (c < 0x20 || c == 0x7f) {
            ef_putf(o, "\\u%04x", c);
            s++;
        } else {
            size_t n = utf8_len(s);
            if (n) {
                ef_put(o, (const char *)s, n);
                s += n;
            } else {
                ef_putf(o, "\\u%04x", c);
                s++;
            }
        }
    }
    ef_puts(o, "\"");
}

void ef_put_vis(struct ef_out *o, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\n')
            ef_puts(o, "\\n");
        else if (c == '\t')
            ef_puts(o, "\\t");
        else if (c < 0x20 || c == 0x7f)
            ef_putf(o, "\\x%02x", c);
        else
            ef_put(o, s, 1);
    }
}

void ef_put_kv(struct ef_out *o, const char *key, const char *val)
{
    ef_putf(o, " %s=", key);
    int plain = *val != 0;
    for (const char *s = val; *s; s++)
        if (*s == ' ' || *s == '"' || *s == '=' || (unsigned char)*s < 0x21 || *s == 0x7f)
            plain = 0;
    if (plain) {
        ef_puts(o, val);
        return;
    }
    ef_puts(o, "\"");
    for (const char *s = val; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            ef_puts(o, "\\");
        if (c >= 0x20 && c != 0x7f)
            ef_put(o, s, 1);
        else
            ef_putf(o, "\\x%02x", c);
    }
    ef_puts(o, "\"");
}

void ef_put_json_head(struct ef_out *o, const char *kind)
{
    ef_puts(o, "{\"tool\":\"epollfork\",\"version\":\"" EF_VERSION "\",\"kind\":");
    ef_put_json_str(o, kind);
}
