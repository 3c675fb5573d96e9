/* The settings of `replfs mount`: one table for the configuration file, the
 * -o options and the long options, so a setting has one name, one check and
 * one way of being printed.
 *
 * Configuration file (INI; replfs.conf(5)):
 *
 *   [mount]        store mountpoint foreground debug read_only attr_timeout entry_timeout
 *   [journal]      segment_mb checkpoint_mb checkpoint_s keep_journal replay
 *   [replication]  listen advertise slave_of key sync sync_timeout strict retain_mb
 *   [log]          level
 *
 * The -o name of a setting is its key, except [log] level (-o log_level) and
 * [mount] read_only (also -o ro). The command line is applied after the
 * file, so it wins.
 */
#include "mount_config.h"
#include "../utils/utils.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum setting {
	S_STORE, S_MOUNTPOINT, S_FOREGROUND, S_DEBUG, S_READ_ONLY, S_ATTR_TIMEOUT,
	S_ENTRY_TIMEOUT, S_SEGMENT_MB, S_CHECKPOINT_MB, S_CHECKPOINT_S, S_KEEP_JOURNAL,
	S_REPLAY, S_LISTEN, S_ADVERTISE, S_SLAVE_OF, S_KEY, S_SYNC, S_SYNC_TIMEOUT, S_STRICT,
	S_RETAIN_MB, S_LOG_LEVEL,
};

static const struct setting_name {
	enum setting id;
	const char *section, *key, *opt;
} settings[] = {
	{ S_STORE, "mount", "store", "store" },
	{ S_MOUNTPOINT, "mount", "mountpoint", "mountpoint" },
	{ S_FOREGROUND, "mount", "foreground", "foreground" },
	{ S_DEBUG, "mount", "debug", "debug" },
	{ S_READ_ONLY, "mount", "read_only", "read_only" },
	{ S_ATTR_TIMEOUT, "mount", "attr_timeout", "attr_timeout" },
	{ S_ENTRY_TIMEOUT, "mount", "entry_timeout", "entry_timeout" },
	{ S_SEGMENT_MB, "journal", "segment_mb", "segment_mb" },
	{ S_CHECKPOINT_MB, "journal", "checkpoint_mb", "checkpoint_mb" },
	{ S_CHECKPOINT_S, "journal", "checkpoint_s", "checkpoint_s" },
	{ S_KEEP_JOURNAL, "journal", "keep_journal", "keep_journal" },
	{ S_REPLAY, "journal", "replay", "replay" },
	{ S_LISTEN, "replication", "listen", "listen" },
	{ S_ADVERTISE, "replication", "advertise", "advertise" },
	{ S_SLAVE_OF, "replication", "slave_of", "slave_of" },
	{ S_KEY, "replication", "key", "key" },
	{ S_SYNC, "replication", "sync", "sync" },
	{ S_SYNC_TIMEOUT, "replication", "sync_timeout", "sync_timeout" },
	{ S_STRICT, "replication", "strict", "strict" },
	{ S_RETAIN_MB, "replication", "retain_mb", "retain_mb" },
	{ S_LOG_LEVEL, "log", "level", "log_level" },
};
#define N_SETTINGS (sizeof(settings) / sizeof(*settings))

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void mount_config_defaults(struct mount_config *c)
{
	memset(c, 0, sizeof(*c));
	c->o.checkpoint_bytes = 64ull << 20;
	c->o.checkpoint_seconds = 30;
	c->o.segment_bytes = 64ull << 20;
	c->o.attr_timeout = 1.0;
	c->o.entry_timeout = 1.0;
	c->ro.sync_timeout_ms = 10000;
	c->ro.retain_bytes = 1ull << 30;
	c->log_level = LOG_LVL_INFO;
}

/* Options mount(8), mount.fuse3 and systemd pass along that mean nothing
 * more to replfs (the kernel mount is always nodev,nosuid via FUSE). */
static int option_is_generic(const char *k, const char *v)
{
	static const char *const flags[] = {
		"rw", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime",
		"relatime", "strictatime", "lazytime", "_netdev", "nofail", "auto", "noauto",
		"user", "nouser", "users", "owner", "group", "allow_other", "default_permissions",
		"defaults", "nonempty", "async"
	};
	if (!strncmp(k, "x-", 2) || !strcmp(k, "comment") || !strcmp(k, "fsname") ||
	    !strcmp(k, "subtype"))
		return 1;
	for (size_t i = 0; i < sizeof(flags) / sizeof(*flags); i++)
		if (!v && !strcmp(k, flags[i]))
			return 1;
	return 0;
}

static int set_url(char *dst, size_t size, const char *key, const char *v, char *why,
		   size_t whylen)
{
	if (*v && ((strncmp(v, "http://", 7) && strncmp(v, "https://", 8)) || strlen(v) >= size ||
		   !v[strcspn(v, ":") + 3])) {
		snprintf(why, whylen, "bad value for %s: '%s' (a URL: http://HOST:PORT)", key, v);
		return -EINVAL;
	}
	snprintf(dst, size, "%s", v);
	return 0;
}

static int set_path(char *dst, size_t size, const char *key, const char *v, char *why,
		    size_t whylen)
{
	if (strlen(v) >= size) {
		snprintf(why, whylen, "bad value for %s: path too long", key);
		return -EINVAL;
	}
	snprintf(dst, size, "%s", v);
	return 0;
}

static int set_number(uint64_t *out, const char *key, const char *v, uint64_t min,
		      uint64_t max, const char *unit, char *why, size_t whylen)
{
	if (config_parse_u64(v, min, max, out) < 0) {
		snprintf(why, whylen, "bad value for %s: '%s' (%s, %llu-%llu)", key, v ? v : "",
			 unit, (unsigned long long)min, (unsigned long long)max);
		return -EINVAL;
	}
	return 0;
}

static int set_one(struct mount_config *c, enum setting id, const char *key, const char *v,
		   char *why, size_t whylen)
{
	uint64_t n;
	int b;

	switch (id) {
	case S_FOREGROUND:
	case S_DEBUG:
	case S_READ_ONLY:
	case S_KEEP_JOURNAL:
	case S_STRICT:
		if (config_parse_bool(v, &b) < 0) {
			snprintf(why, whylen, "bad value for %s: '%s' (yes or no)", key, v);
			return -EINVAL;
		}
		if (id == S_FOREGROUND)
			c->o.foreground = b;
		else if (id == S_DEBUG)
			c->o.debug = b;
		else if (id == S_READ_ONLY)
			c->o.read_only = b;
		else if (id == S_KEEP_JOURNAL)
			c->o.keep_journal = b;
		else
			c->ro.strict = b;
		return 0;
	default:
		break;
	}
	if (!v) {
		snprintf(why, whylen, "%s needs a value (%s=...)", key, key);
		return -EINVAL;
	}
	switch (id) {
	case S_STORE:
		return set_path(c->store, sizeof(c->store), key, v, why, whylen);
	case S_MOUNTPOINT:
		return set_path(c->mountpoint, sizeof(c->mountpoint), key, v, why, whylen);
	case S_KEY:
		return set_path(c->key_path, sizeof(c->key_path), key, v, why, whylen);
	case S_ATTR_TIMEOUT:
	case S_ENTRY_TIMEOUT: {
		char *end;
		double d = strtod(v, &end);
		if (!*v || *end || !(d >= 0 && d <= 86400)) {
			snprintf(why, whylen, "bad value for %s: '%s' (seconds, 0-86400)", key, v);
			return -EINVAL;
		}
		*(id == S_ATTR_TIMEOUT ? &c->o.attr_timeout : &c->o.entry_timeout) = d;
		return 0;
	}
	case S_SEGMENT_MB:
		if (set_number(&n, key, v, 1, 4096, "MiB", why, whylen) < 0)
			return -EINVAL;
		c->o.segment_bytes = n << 20;
		return 0;
	case S_CHECKPOINT_MB:
		if (set_number(&n, key, v, 1, 1 << 20, "MiB", why, whylen) < 0)
			return -EINVAL;
		c->o.checkpoint_bytes = n << 20;
		return 0;
	case S_CHECKPOINT_S:
		if (set_number(&n, key, v, 1, 999999, "seconds", why, whylen) < 0)
			return -EINVAL;
		c->o.checkpoint_seconds = (unsigned)n;
		return 0;
	case S_RETAIN_MB:
		if (set_number(&n, key, v, 1, 1 << 24, "MiB", why, whylen) < 0)
			return -EINVAL;
		c->ro.retain_bytes = n << 20;
		return 0;
	case S_REPLAY:
		if (strcmp(v, "normal") && strcmp(v, "checkpoint")) {
			snprintf(why, whylen, "bad value for %s: '%s' (normal or checkpoint)", key, v);
			return -EINVAL;
		}
		c->o.replay_full = !strcmp(v, "checkpoint");
		return 0;
	case S_LISTEN:
		if (!*v) {
			c->ro.listen_host[0] = '\0';
			c->ro.listen_port = 0;
			return 0;
		}
		if (repl_parse_listen(v, &c->ro) < 0) {
			snprintf(why, whylen, "bad value for %s: '%s' ([HOST]:PORT)", key, v);
			return -EINVAL;
		}
		return 0;
	case S_ADVERTISE:
		return set_url(c->ro.advertise_url, sizeof(c->ro.advertise_url), key, v, why, whylen);
	case S_SLAVE_OF:
		return set_url(c->ro.master_url, sizeof(c->ro.master_url), key, v, why, whylen);
	case S_SYNC:
		if (!strcasecmp(v, "off") || !strcmp(v, "0")) {
			c->ro.sync_count = 0;
			return 0;
		}
		if (set_number(&n, key, v, 1, 64, "a number of slaves or off", why, whylen) < 0)
			return -EINVAL;
		c->ro.sync_count = (int)n;
		return 0;
	case S_SYNC_TIMEOUT:
		if (set_number(&n, key, v, 1, 3600000, "milliseconds", why, whylen) < 0)
			return -EINVAL;
		c->ro.sync_timeout_ms = (unsigned)n;
		c->timeout_set = 1;
		return 0;
	case S_LOG_LEVEL:
		for (int i = 0; i < 4; i++)
			if (!strcasecmp(v, level_names[i])) {
				c->log_level = i;
				return 0;
			}
		snprintf(why, whylen, "bad value for %s: '%s' (error, warn, info or debug)", key, v);
		return -EINVAL;
	default:
		return -EINVAL;
	}
}

int mount_config_set(struct mount_config *c, const char *name, const char *value, char *why,
		     size_t whylen)
{
	if (!strcmp(name, "ro") && !value)
		name = "read_only";
	if (!strcmp(name, "sync") && !value)
		value = "1"; /* --sync alone: one slave */
	for (size_t i = 0; i < N_SETTINGS; i++)
		if (!strcmp(settings[i].opt, name))
			return set_one(c, settings[i].id, name, value, why, whylen);
	if (option_is_generic(name, value))
		return 1;
	if (value)
		snprintf(why, whylen, "unknown mount option: %s=%s", name, value);
	else
		snprintf(why, whylen, "unknown mount option: %s", name);
	return -EINVAL;
}

static int on_config_key(void *arg, const char *section, const char *key, const char *value,
			 char *why, size_t whylen)
{
	int known_section = 0;

	for (size_t i = 0; i < N_SETTINGS; i++) {
		if (strcmp(settings[i].section, section))
			continue;
		known_section = 1;
		if (!strcmp(settings[i].key, key))
			return set_one(arg, settings[i].id, key, value, why, whylen);
	}
	if (!known_section)
		snprintf(why, whylen, *section ? "unknown section [%s]"
					       : "'%s' is outside any section ([mount], [journal], "
						 "[replication], [log])",
			 *section ? section : key);
	else
		snprintf(why, whylen, "unknown key '%s' in [%s]", key, section);
	return -EINVAL;
}

int mount_config_load(struct mount_config *c, const char *path, char *err, size_t errlen)
{
	static const char *const sections[] = { "mount", "journal", "replication", "log", NULL };

	return config_parse_file(path, sections, on_config_key, c, err, errlen);
}

int mount_config_check(const struct mount_config *c, char *why, size_t whylen)
{
	int slave = c->ro.master_url[0] != '\0';

	if ((c->ro.listen_host[0] || slave) && !c->key_path[0])
		snprintf(why, whylen, "replication needs the cluster key: add --key FILE (made by "
				      "`replfs keygen`)");
	else if (slave && c->ro.sync_count)
		snprintf(why, whylen, "--sync is a master's option; a slave acknowledges what it "
				      "holds anyway");
	else if ((c->timeout_set || c->ro.strict) && !c->ro.sync_count)
		snprintf(why, whylen, "--sync-timeout and --strict go with --sync");
	else if (c->ro.sync_count && !c->ro.listen_host[0])
		snprintf(why, whylen, "--sync needs --listen: slaves must be able to reach this "
				      "master");
	else if (c->ro.advertise_url[0] && !c->ro.listen_host[0])
		snprintf(why, whylen, "--advertise names where --listen is reached: add --listen");
	else
		return 0;
	return -EINVAL;
}

static void print_value(const struct mount_config *c, enum setting id, FILE *out)
{
	switch (id) {
	case S_STORE: fputs(c->store, out); break;
	case S_MOUNTPOINT: fputs(c->mountpoint, out); break;
	case S_FOREGROUND: fputs(c->o.foreground ? "yes" : "no", out); break;
	case S_DEBUG: fputs(c->o.debug ? "yes" : "no", out); break;
	case S_READ_ONLY: fputs(c->o.read_only ? "yes" : "no", out); break;
	case S_ATTR_TIMEOUT: fprintf(out, "%g", c->o.attr_timeout); break;
	case S_ENTRY_TIMEOUT: fprintf(out, "%g", c->o.entry_timeout); break;
	case S_SEGMENT_MB: fprintf(out, "%llu", (unsigned long long)(c->o.segment_bytes >> 20)); break;
	case S_CHECKPOINT_MB:
		fprintf(out, "%llu", (unsigned long long)(c->o.checkpoint_bytes >> 20));
		break;
	case S_CHECKPOINT_S: fprintf(out, "%u", c->o.checkpoint_seconds); break;
	case S_KEEP_JOURNAL: fputs(c->o.keep_journal ? "yes" : "no", out); break;
	case S_REPLAY: fputs(c->o.replay_full ? "checkpoint" : "normal", out); break;
	case S_LISTEN:
		if (c->ro.listen_host[0])
			fprintf(out, strchr(c->ro.listen_host, ':') ? "[%s]:%u" : "%s:%u",
				c->ro.listen_host, c->ro.listen_port);
		break;
	case S_ADVERTISE: fputs(c->ro.advertise_url, out); break;
	case S_SLAVE_OF: fputs(c->ro.master_url, out); break;
	case S_KEY: fputs(c->key_path, out); break;
	case S_SYNC:
		if (c->ro.sync_count)
			fprintf(out, "%d", c->ro.sync_count);
		else
			fputs("off", out);
		break;
	case S_SYNC_TIMEOUT: fprintf(out, "%u", c->ro.sync_timeout_ms); break;
	case S_STRICT: fputs(c->ro.strict ? "yes" : "no", out); break;
	case S_RETAIN_MB: fprintf(out, "%llu", (unsigned long long)(c->ro.retain_bytes >> 20)); break;
	case S_LOG_LEVEL: fputs(level_names[c->log_level], out); break;
	}
}

void mount_config_print(const struct mount_config *c, FILE *out)
{
	const char *section = "";

	for (size_t i = 0; i < N_SETTINGS; i++) {
		if (strcmp(section, settings[i].section)) {
			section = settings[i].section;
			fprintf(out, "%s[%s]\n", i ? "\n" : "", section);
		}
		char *v = NULL;
		size_t vlen = 0;
		FILE *m = open_memstream(&v, &vlen);
		if (m) {
			print_value(c, settings[i].id, m);
			fclose(m);
		}
		fprintf(out, "%s =%s%s\n", settings[i].key, v && *v ? " " : "", v ? v : "");
		free(v);
	}
}
