/* Building messages without stdio: PID 1 may not call printf after the clone
 * (it allocates and takes locks), so failure texts are assembled here into a
 * fixed buffer. A text that does not fit is cut, never overrun. */
#include <errno.h>
#include <sys/mount.h>

#include "sv.h"

void text_reset(struct sv_text *t) { t->len = 0; }

static void text_char(struct sv_text *t, char ch)
{
    if (t->len < sizeof t->buf)
        t->buf[t->len++] = ch;
}

void text_str(struct sv_text *t, const char *s)
{
    if (s == NULL) {
        text_str(t, "NULL");
        return;
    }
    while (*s)
        text_char(t, *s++);
}

void text_quoted(struct sv_text *t, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    if (s == NULL) {
        text_str(t, "NULL");
        return;
    }
    text_char(t, '"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            text_char(t, '\\');
            text_char(t, (char)ch);
        } else if (ch < 0x20 || ch == 0x7f) {
            text_str(t, "\\x");
            text_char(t, hex[ch >> 4]);
            text_char(t, hex[ch & 15]);
        } else {
            text_char(t, (char)ch);
        }
    }
    text_char(t, '"');
}

void text_path(struct sv_text *t, const char *staged)
{
    /* PID 1 builds the container below /newroot and reaches the host below
     * /oldroot; neither is a path the user ever gave or will see. */
    if (sv_startswith(staged, SV_OLDROOT "/")) {
        text_quoted(t, staged + sizeof SV_OLDROOT - 1);
    } else if (sv_startswith(staged, SV_NEWROOT "/")) {
        text_quoted(t, staged + sizeof SV_NEWROOT - 1);
        text_str(t, " (in the container)");
    } else if (sv_streq(staged, SV_NEWROOT)) {
        text_str(t, "\"/\" (the container's root)");
    } else {
        text_quoted(t, staged);
    }
}

void text_int(struct sv_text *t, long long v)
{
    char digits[24];
    int n = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    if (v < 0)
        text_char(t, '-');
    do {
        digits[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    while (n)
        text_char(t, digits[--n]);
}

void text_hex(struct sv_text *t, unsigned long long v)
{
    static const char hex[] = "0123456789abcdef";
    char digits[16];
    int n = 0;
    do {
        digits[n++] = hex[v & 15];
        v >>= 4;
    } while (v);
    text_str(t, "0x");
    while (n)
        text_char(t, digits[--n]);
}

void text_mode(struct sv_text *t, unsigned int mode)
{
    for (int shift = 9; shift >= 0; shift -= 3)
        text_char(t, (char)('0' + ((mode >> shift) & 7)));
}

void text_mount_flags(struct sv_text *t, unsigned long flags)
{
    static const struct {
        unsigned long bit;
        const char *name;
    } names[] = {
        {MS_RDONLY, "MS_RDONLY"}, {MS_NOSUID, "MS_NOSUID"}, {MS_NODEV, "MS_NODEV"},
        {MS_NOEXEC, "MS_NOEXEC"}, {MS_REMOUNT, "MS_REMOUNT"}, {MS_BIND, "MS_BIND"},
        {MS_MOVE, "MS_MOVE"},     {MS_REC, "MS_REC"},         {MS_PRIVATE, "MS_PRIVATE"},
        {MS_SLAVE, "MS_SLAVE"},
    };
    int first = 1;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (flags & names[i].bit) {
            if (!first)
                text_char(t, '|');
            text_str(t, names[i].name);
            flags &= ~names[i].bit;
            first = 0;
        }
    }
    if (flags || first) {
        if (!first)
            text_char(t, '|');
        if (flags)
            text_hex(t, flags);
        else
            text_char(t, '0');
    }
}

size_t sv_strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int sv_streq(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

int sv_startswith(const char *s, const char *prefix)
{
    while (*prefix)
        if (*s++ != *prefix++)
            return 0;
    return 1;
}

int sv_join_path(char *out, size_t size, const char *a, const char *b)
{
    size_t n = 0;
    for (const char *parts[2] = {a, b}, **p = parts; p < parts + 2; p++) {
        for (const char *s = *p; s && *s; s++) {
            if (n + 1 >= size) {
                out[0] = '\0';
                return -ENAMETOOLONG;
            }
            out[n++] = *s;
        }
    }
    out[n] = '\0';
    return 0;
}
