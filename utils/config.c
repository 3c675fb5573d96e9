/* Reading INI configuration files (inih does the parsing) and the value
 * syntax every replfs setting shares.
 *
 * The file format is inih's: `[section]` headers, `key = value` lines,
 * comments starting with `#` or `;` at the start of a line (or ` ;` after a
 * value). What a key means is the caller's business: it gets each
 * (section, key, value, line) and answers 0 or -EINVAL with a reason. This
 * file adds what inih leaves out: the file name and line number in every
 * error, and the refusal of a key given twice (a silent "last one wins" hides
 * typos in a file that decides where a filesystem's data goes).
 */
#include "utils.h"

#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct config_run {
	config_handler_fn fn;
	void *arg;
	const char *const *sections;
	FILE *f;
	int line, header_error_line;
	char why[512];
	char (*seen)[160];
	size_t nseen, capseen;
	int failed;
};

static int seen_before(struct config_run *c, const char *section, const char *key)
{
	char id[160];

	snprintf(id, sizeof(id), "%s\n%s", section, key);
	for (size_t i = 0; i < c->nseen; i++)
		if (!strcmp(c->seen[i], id))
			return 1;
	if (c->nseen == c->capseen) {
		size_t cap = c->capseen ? c->capseen * 2 : 32;
		void *p = realloc(c->seen, cap * sizeof(*c->seen));
		if (!p)
			return 0; /* only the duplicate check is lost */
		c->seen = p;
		c->capseen = cap;
	}
	memcpy(c->seen[c->nseen++], id, sizeof(id));
	return 0;
}

/* inih: a nonzero return is success; the first zero makes ini_parse()
 * answer with that line's number. */
static int on_ini_line(void *user, const char *section, const char *key, const char *value)
{
	struct config_run *c = user;

	if (c->failed)
		return 0;
	if (key && seen_before(c, section, key)) {
		snprintf(c->why, sizeof(c->why), "'%s' is given twice in [%s]", key, section);
		c->failed = 1;
		return 0;
	}
	if (c->fn(c->arg, section, key, value, c->why, sizeof(c->why)) < 0) {
		c->failed = 1;
		return 0;
	}
	return 1;
}

/* inih's line reader, so that section headers are checked too: inih only
 * calls the handler for keys, and an unknown section with no keys (a typo
 * in a header) would pass silently. */
static char *read_ini_line(char *buf, int size, void *stream)
{
	struct config_run *c = stream;
	char name[128];

	if (c->header_error_line || !fgets(buf, size, c->f))
		return NULL;
	c->line++;
	const char *p = buf + strspn(buf, " \t");
	if (*p != '[' || !c->sections || sscanf(p, "[%127[^]]]", name) != 1)
		return buf;
	for (const char *const *s = c->sections; *s; s++)
		if (!strcmp(*s, name))
			return buf;
	snprintf(c->why, sizeof(c->why), "unknown section [%s]", name);
	c->header_error_line = c->line;
	return NULL;
}

int config_parse_file(const char *path, const char *const *sections, config_handler_fn fn,
		      void *arg, char *err, size_t errlen)
{
	struct config_run c = { .fn = fn, .arg = arg, .sections = sections };
	int line;

	if (!(c.f = fopen(path, "re"))) {
		int e = errno;
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(e));
		return -e;
	}
	line = ini_parse_stream(read_ini_line, &c, on_ini_line, &c);
	fclose(c.f);
	free(c.seen);
	if (line == 0 && c.header_error_line) {
		line = c.header_error_line;
		c.failed = 1;
	}
	if (line == 0)
		return 0;
	if (line < 0) {
		snprintf(err, errlen, "cannot read %s: out of memory", path);
		return -ENOMEM;
	}
	snprintf(err, errlen, "%s:%d: %s", path, line, c.failed ? c.why : "syntax error");
	return -EINVAL;
}

int config_parse_bool(const char *v, int *out)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };

	if (!v) {
		*out = 1; /* a bare flag: `-o strict` */
		return 0;
	}
	for (size_t i = 0; i < 4; i++) {
		if (!strcasecmp(v, yes[i])) {
			*out = 1;
			return 0;
		}
		if (!strcasecmp(v, no[i])) {
			*out = 0;
			return 0;
		}
	}
	return -EINVAL;
}

int config_parse_u64(const char *v, uint64_t min, uint64_t max, uint64_t *out)
{
	unsigned long long n;
	char *end;

	if (!v || !*v || *v == '-' || *v == '+' || *v == ' ')
		return -EINVAL;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno || *end || n < min || n > max)
		return -EINVAL;
	*out = n;
	return 0;
}
