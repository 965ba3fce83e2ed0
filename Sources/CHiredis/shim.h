#ifndef HIREDISKIT_CHIREDIS_SHIM_H
#define HIREDISKIT_CHIREDIS_SHIM_H

/* hiredis 0.14 (Debian/Ubuntu libhiredis-dev) and 1.x (Homebrew, newer distros) both
 * install these headers under <hiredis/...>; pkg-config adds -I.../hiredis as well. */
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <time.h>

#if defined(__linux__) && defined(__LP64__)
#define HIREDIS_KIT_HAS_PPOLL 1
/* glibc declares ppoll only under _GNU_SOURCE, which Swift's Glibc module is not built
 * with; the function is in glibc since 2.4 and in every musl. 64-bit only: on 32-bit
 * systems with a 64-bit time_t the header redirects ppoll to another symbol. */
extern int ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *timeout, const sigset_t *sigmask);
#endif

/* Waits up to `nanoseconds` for `fd` to be readable (or closed, or in error).
 * Returns 1 when it is, 0 when the time ran out, -1 on error (errno set). */
static inline int hiredis_kit_wait_readable(int fd, long long nanoseconds) {
    struct pollfd descriptor = { .fd = fd, .events = POLLIN, .revents = 0 };
#if defined(HIREDIS_KIT_HAS_PPOLL)
    struct timespec limit = { .tv_sec = (time_t)(nanoseconds / 1000000000LL),
                              .tv_nsec = (long)(nanoseconds % 1000000000LL) };
    return ppoll(&descriptor, 1, &limit, NULL);
#else
    /* No ppoll (Darwin, 32-bit Linux): poll's milliseconds, rounded up. */
    return poll(&descriptor, 1, (int)((nanoseconds + 999999LL) / 1000000LL));
#endif
}


/* ------------------------------------------------------------------------------------
 * Reply objects from a per-connection cache.
 *
 * hiredis's reader builds each reply with its object functions; the default ones make a
 * `redisReply` with calloc and its string with malloc, and free both once the reply's
 * callback returned. These make the same `redisReply` structs (hiredis's async code reads
 * replies as `redisReply`: subscribe confirmations, spontaneous errors), but take them
 * from a free list that the connection's reader owns, with strings of up to
 * HIREDIS_KIT_INLINE_STRING bytes stored in the node itself: a typical reply (+OK, :1, a
 * short bulk) costs no malloc and no free.
 *
 * A cache serves one reader, on one thread at a time (the connection's queue). Its owner
 * destroys it after the reader is freed: hiredis frees every reply right after its
 * callback, and the reader frees a reply it was still building, so no node is out then.
 * ---------------------------------------------------------------------------------- */

#include <stdlib.h>
#include <string.h>

#define HIREDIS_KIT_INLINE_STRING 47
#define HIREDIS_KIT_CACHED_REPLIES 256

struct hiredis_kit_reply_cache;

typedef struct hiredis_kit_reply_node {
    redisReply reply; /* first: the pointer hiredis and the callbacks see */
    struct hiredis_kit_reply_cache *cache; /* NULL: malloc'ed outside any cache */
    struct hiredis_kit_reply_node *next;
    char text[HIREDIS_KIT_INLINE_STRING + 1];
} hiredis_kit_reply_node;

typedef struct hiredis_kit_reply_cache {
    redisReplyObjectFunctions functions; /* the reader's `fn` points here */
    hiredis_kit_reply_node *head;
    int count;
} hiredis_kit_reply_cache;

/* A zeroed node of `type`, linked into its parent array; NULL when out of memory. */
static redisReply *hiredis_kit_reply_new(const redisReadTask *task, int type) {
    hiredis_kit_reply_cache *cache = (hiredis_kit_reply_cache *)task->privdata;
    hiredis_kit_reply_node *node;
    if (cache != NULL && cache->head != NULL) {
        node = cache->head;
        cache->head = node->next;
        cache->count -= 1;
    } else {
        node = (hiredis_kit_reply_node *)malloc(sizeof(*node));
        if (node == NULL) return NULL;
    }
    memset(&node->reply, 0, sizeof(node->reply));
    node->cache = cache;
    node->next = NULL;
    node->reply.type = type;
    if (task->parent != NULL) {
        redisReply *parent = (redisReply *)task->parent->obj;
        parent->element[task->idx] = &node->reply;
    }
    return &node->reply;
}

static void hiredis_kit_reply_release_node(redisReply *reply) {
    hiredis_kit_reply_node *node = (hiredis_kit_reply_node *)reply;
    if (reply->str != NULL && reply->str != node->text) free(reply->str);
    hiredis_kit_reply_cache *cache = node->cache;
    if (cache != NULL && cache->count < HIREDIS_KIT_CACHED_REPLIES) {
        node->next = cache->head;
        cache->head = node;
        cache->count += 1;
    } else {
        free(node);
    }
}

/* A node that could not be completed: unlinked from its parent, then released. */
static void *hiredis_kit_reply_abandon(const redisReadTask *task, redisReply *reply) {
    if (task->parent != NULL) ((redisReply *)task->parent->obj)->element[task->idx] = NULL;
    hiredis_kit_reply_release_node(reply);
    return NULL;
}

static void hiredis_kit_reply_free(void *object) {
    redisReply *reply = (redisReply *)object;
    if (reply == NULL) return;
    if (reply->element != NULL) {
        for (size_t index = 0; index < reply->elements; index++) {
            hiredis_kit_reply_free(reply->element[index]);
        }
        free(reply->element);
    }
    hiredis_kit_reply_release_node(reply);
}

/* Copies `length` bytes of `text` into the node (or a malloc'ed buffer), NUL-terminated. */
static int hiredis_kit_reply_set_text(redisReply *reply, const char *text, size_t length) {
    hiredis_kit_reply_node *node = (hiredis_kit_reply_node *)reply;
    char *buffer = node->text;
    if (length > HIREDIS_KIT_INLINE_STRING) {
        buffer = (char *)malloc(length + 1);
        if (buffer == NULL) return 0;
    }
    if (length > 0) memcpy(buffer, text, length);
    buffer[length] = '\0';
    reply->str = buffer;
    reply->len = length;
    return 1;
}

static void *hiredis_kit_create_string(const redisReadTask *task, char *text, size_t length) {
    redisReply *reply = hiredis_kit_reply_new(task, task->type);
    if (reply == NULL) return NULL;
    const char *start = text;
#if HIREDIS_MAJOR >= 1
    if (task->type == REDIS_REPLY_VERB && length >= 4) {
        /* "txt:…": the format in vtype, the rest in str (as hiredis's own function does). */
        memcpy(reply->vtype, text, 3);
        reply->vtype[3] = '\0';
        start = text + 4;
        length -= 4;
    }
#endif
    if (!hiredis_kit_reply_set_text(reply, start, length)) return hiredis_kit_reply_abandon(task, reply);
    return reply;
}

#if HIREDIS_MAJOR >= 1
static void *hiredis_kit_create_array(const redisReadTask *task, size_t elements) {
#else
static void *hiredis_kit_create_array(const redisReadTask *task, int elements) {
#endif
    redisReply *reply = hiredis_kit_reply_new(task, task->type);
    if (reply == NULL) return NULL;
    if (elements > 0) {
        reply->element = (redisReply **)calloc((size_t)elements, sizeof(redisReply *));
        if (reply->element == NULL) return hiredis_kit_reply_abandon(task, reply);
    }
    reply->elements = (size_t)elements;
    return reply;
}

static void *hiredis_kit_create_integer(const redisReadTask *task, long long value) {
    redisReply *reply = hiredis_kit_reply_new(task, REDIS_REPLY_INTEGER);
    if (reply != NULL) reply->integer = value;
    return reply;
}

static void *hiredis_kit_create_nil(const redisReadTask *task) {
    return hiredis_kit_reply_new(task, REDIS_REPLY_NIL);
}

#if HIREDIS_MAJOR >= 1
static void *hiredis_kit_create_double(const redisReadTask *task, double value, char *text, size_t length) {
    redisReply *reply = hiredis_kit_reply_new(task, REDIS_REPLY_DOUBLE);
    if (reply == NULL) return NULL;
    reply->dval = value;
    if (!hiredis_kit_reply_set_text(reply, text, length)) return hiredis_kit_reply_abandon(task, reply);
    return reply;
}

static void *hiredis_kit_create_bool(const redisReadTask *task, int value) {
    redisReply *reply = hiredis_kit_reply_new(task, REDIS_REPLY_BOOL);
    if (reply != NULL) reply->integer = value != 0;
    return reply;
}
#endif

/* A cache for one reader; NULL when out of memory. */
static inline hiredis_kit_reply_cache *hiredis_kit_reply_cache_create(void) {
    hiredis_kit_reply_cache *cache = (hiredis_kit_reply_cache *)calloc(1, sizeof(*cache));
    if (cache == NULL) return NULL;
    cache->functions.createString = hiredis_kit_create_string;
    cache->functions.createArray = hiredis_kit_create_array;
    cache->functions.createInteger = hiredis_kit_create_integer;
    cache->functions.createNil = hiredis_kit_create_nil;
#if HIREDIS_MAJOR >= 1
    cache->functions.createDouble = hiredis_kit_create_double;
    cache->functions.createBool = hiredis_kit_create_bool;
#endif
    cache->functions.freeObject = hiredis_kit_reply_free;
    return cache;
}

/* Makes `reader` build its replies from `cache` (before it has read anything). */
static inline void hiredis_kit_reader_use_cache(redisReader *reader, hiredis_kit_reply_cache *cache) {
    reader->fn = &cache->functions;
    reader->privdata = cache;
}

/* Frees a reply made by a reader that uses a cache. */
static inline void hiredis_kit_free_reply(void *reply) {
    hiredis_kit_reply_free(reply);
}

/* Frees `cache` and its free list; only once its reader is freed. */
static inline void hiredis_kit_reply_cache_destroy(hiredis_kit_reply_cache *cache) {
    if (cache == NULL) return;
    while (cache->head != NULL) {
        hiredis_kit_reply_node *node = cache->head;
        cache->head = node->next;
        free(node);
    }
    free(cache);
}

#endif
