/* Validation of the relative paths that records carry. A record may come from
 * another node; whatever it holds, it must name something beneath the data
 * directory, so the syntax is checked here and the resolution is done with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) by the apply step. */
#include "utils.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

int path_check(const char *path, size_t len)
{
	size_t i = 0;

	if (len >= PATH_MAX)
		return -ENAMETOOLONG;
	if (memchr(path, '\0', len))
		return -EINVAL;
	if (len == 0)
		return 0; /* the root */
	while (i < len) {
		size_t start = i;

		while (i < len && path[i] != '/')
			i++;
		size_t clen = i - start;
		if (clen == 0)
			return -EINVAL; /* leading '/', "//" or trailing '/' */
		if (clen > NAME_MAX)
			return -ENAMETOOLONG;
		if (path[start] == '.' && (clen == 1 || (clen == 2 && path[start + 1] == '.')))
			return -EINVAL;
		if (i < len) {
			i++; /* skip '/' */
			if (i == len)
				return -EINVAL;
		}
	}
	return 0;
}

const char *path_split(const char *path, char *parent_buf, size_t bufsize)
{
	const char *slash = strrchr(path, '/');
	size_t plen;

	if (!slash) {
		parent_buf[0] = '\0';
		return path;
	}
	plen = (size_t)(slash - path);
	if (plen >= bufsize)
		plen = bufsize - 1;
	memcpy(parent_buf, path, plen);
	parent_buf[plen] = '\0';
	return slash + 1;
}
