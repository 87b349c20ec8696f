/*
 * ikefrag-keys: hands the keys of each IKEv2 SA to ikefragd's key socket.
 *
 * What it does, and why it is built this way:
 *
 * - charon's bus calls ike_derived_keys for every IKEv2 SA whose keys are
 *   derived: the initial SA after IKE_SA_INIT and each new SA of an IKE SA
 *   rekey (RFC 7296 §2.18), then ike_keys naming the SA they belong to and
 *   the SA a rekey replaces (ike_derived_keys alone may name the old SA).
 *   ike_rekey links the new SA to the old one again when the rekey is
 *   done, and ike_state_change(IKE_DESTROYING) says an SA is gone.
 * - Those hooks run on charon's threads, with the IKE SA checked out. They
 *   must never wait for ikefragd: they format one JSON line and append it to
 *   a bounded queue under a mutex held for a few instructions. A full queue
 *   drops the line, counts it and logs the SA's SPIs (never a key).
 * - One sender thread of the plugin's own owns the socket: it connects,
 *   checks who is listening, writes lines and reads ikefragd's replies with
 *   timeouts, and reconnects with backoff. After each (re)connect it first
 *   re-sends the keys of the IKE SAs still alive, so an ikefragd restart
 *   loses nothing.
 * - Keys live only in this process's memory: in the queued line until it
 *   is sent (then memwipe'd) and in the per-SA record used for re-sending
 *   (memwipe'd when the SA goes). Nothing is written to disk or logged.
 *
 * Settings (strongswan.conf):
 *   charon.plugins.ikefrag-keys.socket  = /run/ikefrag/keys/keys.sock (or unix://PATH)
 *   charon.plugins.ikefrag-keys.user    = root  owner the socket must have
 *   charon.plugins.ikefrag-keys.queue   = 4096  queued lines at most
 *   charon.plugins.ikefrag-keys.timeout = 2000  ms per write or reply
 *   charon.plugins.ikefrag-keys.timing  = no    add "tq", "tw" (when a line
 *                                               was queued, written) and "rq"
 *                                               (how long the sender thread
 *                                               waited for a CPU meanwhile)
 *                                               to each line, for measuring
 *                                               delivery latency by stage
 *   charon.plugins.ikefrag-keys.load    = yes
 *
 * Licence: Apache-2.0, see LICENSE at the top of the ikefrag repository.
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf, struct ucred */
#endif
#include "ikefrag_keys_plugin.h"

#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <inttypes.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <daemon.h>
#include <collections/hashtable.h>
#include <threading/condvar.h>
#include <threading/mutex.h>
#include <threading/thread.h>

/** Default bound of the queue: enough for a burst of thousands of new SAs
 *  while ikefragd is slow, small enough (a few MiB) to be harmless. */
#define DEFAULT_QUEUE 4096
/** Default time one write or one reply may take before the sender gives up
 *  on the connection (a stalled ikefragd must not stall the queue forever;
 *  charon itself never waits either way). */
#define DEFAULT_TIMEOUT_MS 2000
/** Reconnect backoff bounds: retry quickly after an ikefragd restart, but do
 *  not spin while it is down. */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
/** How often an idle sender checks that ikefragd is still there. */
#define IDLE_PROBE_MS 250
/** Longest line: 4 keys of at most 64 bytes in hex plus SPIs and names. */
#define LINE_MAX_LEN 1024
/** Longest reply line read from ikefragd. */
#define REPLY_MAX_LEN 512

typedef struct private_ikefrag_keys_plugin_t private_ikefrag_keys_plugin_t;

/** One queued line (it may hold keys). */
typedef struct {
	char *line;
	size_t len;
	/** when it was queued (CLOCK_REALTIME, ns), with timing on; else 0 */
	uint64_t tq;
} qline_t;

/** What the plugin keeps of a live IKE SA, to re-send after a reconnect. */
typedef struct {
	uint32_t unique_id;
	uint64_t spi_i, spi_r;
	/** this host's address of the SA (the proxy's backend address), for
	 *  the "server" member */
	char server[INET6_ADDRSTRLEN];
	/** the keys line (secret) */
	char *keys;
	size_t keys_len;
	/** the rekey link line, or NULL */
	char *link;
} sa_rec_t;

/** The plugin's state. The listener comes first: charon calls the hooks
 *  with a pointer to it, which METHOD casts to this type. */
struct private_ikefrag_keys_plugin_t {
	listener_t listener;

	char *path;
	uid_t uid;
	u_int queue_max;
	u_int timeout_ms;
	/** add "tq", "tw" and "rq" to the lines (set at start, read-only after) */
	bool timing;

	/** guards everything below; held only for short list and table
	 *  operations, never across I/O */
	mutex_t *mutex;
	/** signalled when a line is queued (after the mutex is released,
	 *  see unlock_wake) or the plugin stops */
	condvar_t *cond;
	/** a line was queued under the current hold of the mutex */
	bool wake;
	/** ring of qline_t, queue_max long */
	qline_t *ring;
	u_int head, count;
	/** unique id -> sa_rec_t */
	hashtable_t *sas;
	/** set when the sender must re-send every live SA first */
	bool resync;
	bool stop;
	/** the connected fd, -1 without; destroy shuts it down to wake the
	 *  sender */
	int fd;

	/** counters (guarded by mutex) */
	uint64_t sent, dropped, rejected, refused, connects;

	thread_t *sender;
};

static void wipe_free(char *s, size_t len)
{
	if (s)
	{
		memwipe(s, len);
		free(s);
	}
}

/** CLOCK_REALTIME in ns: the clock of "t", "tq" and "tw", which ikefragd
 *  (another process) compares with its own wall clock. */
static uint64_t now_ns()
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void hex(char *dst, chunk_t c)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < c.len; i++)
	{
		dst[2*i] = digits[c.ptr[i] >> 4];
		dst[2*i+1] = digits[c.ptr[i] & 0x0f];
	}
	dst[2*c.len] = '\0';
}

/**
 * Queue a line; takes ownership. Called with mutex held. A full queue drops
 * the line (wiped) and counts it.
 */
static bool enqueue_locked(private_ikefrag_keys_plugin_t *this, char *line,
						   size_t len)
{
	if (this->count >= this->queue_max)
	{
		wipe_free(line, len);
		this->dropped++;
		return FALSE;
	}
	this->ring[(this->head + this->count) % this->queue_max] = (qline_t){
		.line = line, .len = len, .tq = this->timing ? now_ns() : 0,
	};
	this->count++;
	this->wake = TRUE;
	return TRUE;
}

/**
 * Release the mutex, then wake the sender if a line was queued. Not the
 * other way round: a sender woken while the queueing thread still holds
 * the mutex runs only to block on it and must be woken a second time when
 * it is released, and on a busy machine each wake-up can wait for a CPU
 * (milliseconds). No wake-up is lost: the sender checks the queue and
 * starts waiting under the mutex, and the line was queued under it.
 */
static void unlock_wake(private_ikefrag_keys_plugin_t *this)
{
	bool wake = this->wake;

	this->wake = FALSE;
	this->mutex->unlock(this->mutex);
	if (wake)
	{
		this->cond->signal(this->cond);
	}
}

static void rec_destroy(sa_rec_t *rec)
{
	wipe_free(rec->keys, rec->keys_len);
	free(rec->link);
	free(rec);
}

/**
 * This host's address of an IKE SA, the VPN server's own (the proxy's
 * backend address): the "server" member, by which a key listener checks
 * that a forwarder speaks only for its own servers.
 */
static void server_addr(ike_sa_t *ike_sa, char *buf, size_t len)
{
	host_t *me = ike_sa->get_my_host(ike_sa);
	chunk_t a;

	buf[0] = '\0';
	if (!me)
	{
		return;
	}
	a = me->get_address(me);
	if (!inet_ntop(me->get_family(me), a.ptr, buf, len))
	{
		buf[0] = '\0';
	}
}

static char *delete_line(uint64_t spi_i, uint64_t spi_r, const char *server,
						 size_t *len)
{
	char *line;
	int n;

	n = asprintf(&line, "{\"spi_i\":\"%.16"PRIx64"\",\"spi_r\":\"%.16"PRIx64
				 "\",\"server\":\"%s\",\"delete\":true}\n", spi_i, spi_r, server);
	if (n < 0)
	{
		return NULL;
	}
	*len = n;
	return line;
}

/**
 * The keys derived last on this thread. charon reports them on the bus
 * (ike_derived_keys) with the thread's IKE SA, which during an IKE SA rekey
 * started by this host is still the old SA; right after, ike_keys names
 * the SA the keys belong to (and the SA it replaces). So the keys wait
 * here, in hex, between the two calls on the same thread.
 */
typedef struct {
	bool valid;
	/** when the keys were derived (CLOCK_REALTIME, ns): lets ikefragd
	 *  measure how long delivery took */
	uint64_t t;
	char ei[129], er[129], ai[129], ar[129];
} stash_t;

static __thread stash_t stash;

static void stash_wipe()
{
	memwipe(&stash, sizeof(stash));
}

METHOD(listener_t, ike_derived_keys, bool,
	private_ikefrag_keys_plugin_t *this, ike_sa_t *ike_sa, chunk_t sk_d,
	chunk_t sk_ai, chunk_t sk_ar, chunk_t sk_ei, chunk_t sk_er, chunk_t sk_pi,
	chunk_t sk_pr)
{
	stash_wipe();
	if (sk_ei.len > 64 || sk_er.len > 64 || sk_ai.len > 64 || sk_ar.len > 64)
	{
		DBG1(DBG_IKE, "ikefrag-keys: derived keys longer than expected, "
			 "not sent");
		return TRUE;
	}
	stash.t = now_ns();
	hex(stash.ei, sk_ei);
	hex(stash.er, sk_er);
	hex(stash.ai, sk_ai);
	hex(stash.ar, sk_ar);
	stash.valid = TRUE;
	return TRUE;
}

METHOD(listener_t, ike_keys, bool,
	private_ikefrag_keys_plugin_t *this, ike_sa_t *ike_sa, key_exchange_t *dh,
	chunk_t dh_other, chunk_t nonce_i, chunk_t nonce_r, ike_sa_t *rekey,
	shared_key_t *shared, auth_method_t method)
{
	ike_sa_id_t *id;
	proposal_t *proposal;
	uint16_t encr = 0, encr_bits = 0, integ = 0;
	uint64_t spi_i, spi_r;
	char *line, *keys = NULL, *old_del = NULL, link[80] = "";
	char server[INET6_ADDRSTRLEN];
	size_t len, old_del_len = 0;
	sa_rec_t *rec, *old;
	uint32_t uid;
	bool queued;
	int n;

	if (!stash.valid || ike_sa->get_version(ike_sa) != IKEV2)
	{
		stash_wipe();
		return TRUE;
	}
	proposal = ike_sa->get_proposal(ike_sa);
	if (!proposal ||
		!proposal->get_algorithm(proposal, ENCRYPTION_ALGORITHM, &encr,
								 &encr_bits))
	{
		stash_wipe();
		return TRUE;
	}
	proposal->get_algorithm(proposal, INTEGRITY_ALGORITHM, &integ, NULL);
	id = ike_sa->get_id(ike_sa);
	spi_i = be64toh(id->get_initiator_spi(id));
	spi_r = be64toh(id->get_responder_spi(id));
	server_addr(ike_sa, server, sizeof(server));
	if (rekey)
	{
		ike_sa_id_t *oid = rekey->get_id(rekey);

		snprintf(link, sizeof(link), "\"old_spi_i\":\"%.16"PRIx64"\","
				 "\"old_spi_r\":\"%.16"PRIx64"\",",
				 be64toh(oid->get_initiator_spi(oid)),
				 be64toh(oid->get_responder_spi(oid)));
	}
	/* IKEv2 transform IDs (IANA) are strongSwan's enum values for these.
	 * "frag": both peers sent IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383 §2.3),
	 * as charon concluded from IKE_SA_INIT (a rekeyed SA inherits it), so
	 * that an ikefragd that did not see IKE_SA_INIT (restarted, or the SA
	 * was rekeyed) still knows whether it may send fragments. */
	n = asprintf(&line, "{\"spi_i\":\"%.16"PRIx64"\",\"spi_r\":\"%.16"PRIx64
				 "\",\"server\":\"%s\",%s\"t\":%"PRIu64",\"encr\":%u,\"key_bits\":%u,\"integ\":%u,\"frag\":%s,"
				 "\"sk_ei\":\"%s\",\"sk_er\":\"%s\",\"sk_ai\":\"%s\","
				 "\"sk_ar\":\"%s\"}\n",
				 spi_i, spi_r, server, link, stash.t, encr, encr_bits, integ,
				 ike_sa->supports_extension(ike_sa, EXT_IKE_FRAGMENTATION) ?
					"true" : "false", stash.ei, stash.er, stash.ai, stash.ar);
	stash_wipe();
	if (n < 0)
	{
		return TRUE;
	}
	len = n;
	keys = strndup(line, len);
	if (!keys)
	{
		wipe_free(line, len);
		return TRUE;
	}
	uid = ike_sa->get_unique_id(ike_sa);
	INIT(rec,
		.unique_id = uid,
		.spi_i = spi_i,
		.spi_r = spi_r,
		.keys = keys,
		.keys_len = len,
	);
	memcpy(rec->server, server, sizeof(rec->server));

	this->mutex->lock(this->mutex);
	old = this->sas->put(this->sas, (void*)(uintptr_t)uid, rec);
	if (old && (old->spi_i != spi_i || old->spi_r != spi_r))
	{
		/* new keys under new SPIs for the same SA (a restarted
		 * IKE_SA_INIT): the old pair is dead */
		old_del = delete_line(old->spi_i, old->spi_r, old->server, &old_del_len);
	}
	if (old_del)
	{
		enqueue_locked(this, old_del, old_del_len);
	}
	queued = enqueue_locked(this, line, len);
	unlock_wake(this);
	if (old)
	{
		rec_destroy(old);
	}
	if (!queued)
	{
		DBG1(DBG_IKE, "ikefrag-keys: queue full, keys of IKE_SA %s[%u] "
			 "(SPIs %.16"PRIx64"_i %.16"PRIx64"_r) dropped",
			 ike_sa->get_name(ike_sa), uid, spi_i, spi_r);
	}
	return TRUE;
}

METHOD(listener_t, ike_rekey, bool,
	private_ikefrag_keys_plugin_t *this, ike_sa_t *old, ike_sa_t *new)
{
	ike_sa_id_t *oid, *nid;
	sa_rec_t *rec;
	char *line, *copy = NULL, server[INET6_ADDRSTRLEN];
	uint32_t uid;
	bool queued = TRUE;
	int n;

	if (new->get_version(new) != IKEV2)
	{
		return TRUE;
	}
	oid = old->get_id(old);
	nid = new->get_id(new);
	server_addr(new, server, sizeof(server));
	n = asprintf(&line, "{\"spi_i\":\"%.16"PRIx64"\",\"spi_r\":\"%.16"PRIx64
				 "\",\"server\":\"%s\",\"old_spi_i\":\"%.16"PRIx64"\",\"old_spi_r\":\"%.16"PRIx64
				 "\"}\n",
				 be64toh(nid->get_initiator_spi(nid)),
				 be64toh(nid->get_responder_spi(nid)), server,
				 be64toh(oid->get_initiator_spi(oid)),
				 be64toh(oid->get_responder_spi(oid)));
	if (n < 0)
	{
		return TRUE;
	}
	copy = strdup(line);
	uid = new->get_unique_id(new);
	this->mutex->lock(this->mutex);
	rec = this->sas->get(this->sas, (void*)(uintptr_t)uid);
	if (rec && copy)
	{
		free(rec->link);
		rec->link = copy;
		copy = NULL;
	}
	queued = enqueue_locked(this, line, n);
	unlock_wake(this);
	free(copy);
	if (!queued)
	{
		DBG1(DBG_IKE, "ikefrag-keys: queue full, rekey link of IKE_SA %s[%u] "
			 "dropped", new->get_name(new), uid);
	}
	return TRUE;
}

METHOD(listener_t, ike_state_change, bool,
	private_ikefrag_keys_plugin_t *this, ike_sa_t *ike_sa,
	ike_sa_state_t state)
{
	sa_rec_t *rec;
	char *line = NULL;
	size_t len = 0;
	uint32_t uid;
	bool queued = TRUE;

	if (state != IKE_DESTROYING)
	{
		return TRUE;
	}
	uid = ike_sa->get_unique_id(ike_sa);
	this->mutex->lock(this->mutex);
	rec = this->sas->remove(this->sas, (void*)(uintptr_t)uid);
	if (rec)
	{
		line = delete_line(rec->spi_i, rec->spi_r, rec->server, &len);
		if (line)
		{
			queued = enqueue_locked(this, line, len);
		}
	}
	unlock_wake(this);
	if (rec)
	{
		if (!queued)
		{
			DBG1(DBG_IKE, "ikefrag-keys: queue full, delete of IKE_SA %s[%u] "
				 "dropped", ike_sa->get_name(ike_sa), uid);
		}
		rec_destroy(rec);
	}
	return TRUE;
}

/**
 * Connect and check that the socket and its listener belong to the
 * configured user. Returns the fd or -1.
 */
static int connect_socket(private_ikefrag_keys_plugin_t *this, bool *logged)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct timeval tv = {
		.tv_sec = this->timeout_ms / 1000,
		.tv_usec = (this->timeout_ms % 1000) * 1000,
	};
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	struct stat st;
	int fd;

	if (lstat(this->path, &st) != 0)
	{
		if (!*logged)
		{
			DBG1(DBG_CFG, "ikefrag-keys: key socket '%s' not there (%s), "
				 "retrying", this->path, strerror(errno));
			*logged = TRUE;
		}
		return -1;
	}
	if (!S_ISSOCK(st.st_mode) || st.st_uid != this->uid)
	{
		if (!*logged)
		{
			DBG1(DBG_CFG, "ikefrag-keys: refusing '%s': %s owned by uid %u, "
				 "not by the configured user (uid %u)", this->path,
				 S_ISSOCK(st.st_mode) ? "socket" : "not a socket",
				 st.st_uid, this->uid);
			*logged = TRUE;
		}
		this->mutex->lock(this->mutex);
		this->refused++;
		this->mutex->unlock(this->mutex);
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
	{
		return -1;
	}
	strncpy(addr.sun_path, this->path, sizeof(addr.sun_path) - 1);
	if (connect(fd, (struct sockaddr*)&addr, sizeof(addr)) != 0)
	{
		if (!*logged)
		{
			DBG1(DBG_CFG, "ikefrag-keys: connecting to '%s' failed: %s, "
				 "retrying", this->path, strerror(errno));
			*logged = TRUE;
		}
		close(fd);
		return -1;
	}
	/* the listener's credentials, as they were when it called listen() */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0 ||
		cred.uid != this->uid)
	{
		if (!*logged)
		{
			DBG1(DBG_CFG, "ikefrag-keys: refusing '%s': the listening process "
				 "is not the configured user (uid %u)", this->path, this->uid);
			*logged = TRUE;
		}
		this->mutex->lock(this->mutex);
		this->refused++;
		this->mutex->unlock(this->mutex);
		close(fd);
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/**
 * Write the iovecs completely (one sendmsg in the usual case: ikefragd
 * reads the line in one piece). FALSE on error or timeout.
 */
static bool send_all(int fd, struct iovec *iov, int iovcnt)
{
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = iovcnt };
	ssize_t n;

	while (msg.msg_iovlen > 0)
	{
		n = sendmsg(fd, &msg, MSG_NOSIGNAL);
		if (n <= 0)
		{
			if (n < 0 && errno == EINTR)
			{
				continue;
			}
			return FALSE;
		}
		while (msg.msg_iovlen > 0 && (size_t)n >= msg.msg_iov->iov_len)
		{
			n -= msg.msg_iov->iov_len;
			msg.msg_iov++;
			msg.msg_iovlen--;
		}
		if (msg.msg_iovlen > 0)
		{
			msg.msg_iov->iov_base = (char*)msg.msg_iov->iov_base + n;
			msg.msg_iov->iov_len -= n;
		}
	}
	return TRUE;
}

/**
 * The calling thread's run-queue delay so far (ns runnable without a CPU),
 * the second field of its /proc schedstat, open as fd; 0 without.
 */
static uint64_t run_delay(int fd)
{
	char buf[128];
	unsigned long long run, wait;
	ssize_t n;

	if (fd < 0)
	{
		return 0;
	}
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
	{
		return 0;
	}
	buf[n] = '\0';
	if (sscanf(buf, "%llu %llu", &run, &wait) != 2)
	{
		return 0;
	}
	return wait;
}

/**
 * Write a line and read ikefragd's reply. FALSE when the connection is
 * unusable; *ok tells whether ikefragd accepted the line. With timing on,
 * a line queued at tq gets "tq", "tw" (now) and "rq" as its last members.
 */
static bool send_line(private_ikefrag_keys_plugin_t *this, int fd,
					  const char *line, size_t len, uint64_t tq, uint64_t rq,
					  bool *ok)
{
	char reply[REPLY_MAX_LEN], times[96];
	struct iovec iov[2] = {
		{ .iov_base = (char*)line, .iov_len = len },
	};
	int iovcnt = 1;
	size_t got = 0;
	ssize_t n;

	if (tq && len >= 2 && line[len-2] == '}' && line[len-1] == '\n')
	{
		/* the line without its closing "}\n", then the times and those */
		iov[0].iov_len = len - 2;
		iov[1].iov_base = times;
		iov[1].iov_len = snprintf(times, sizeof(times),
								  ",\"tq\":%"PRIu64",\"tw\":%"PRIu64
								  ",\"rq\":%"PRIu64"}\n", tq, now_ns(), rq);
		iovcnt = 2;
	}
	if (!send_all(fd, iov, iovcnt))
	{
		return FALSE;
	}
	while (got < sizeof(reply) - 1)
	{
		n = recv(fd, reply + got, 1, 0);
		if (n <= 0)
		{
			if (n < 0 && errno == EINTR)
			{
				continue;
			}
			return FALSE;
		}
		if (reply[got] == '\n')
		{
			break;
		}
		got++;
	}
	reply[got] = '\0';
	*ok = strncmp(reply, "{\"ok\":true}", 11) == 0;
	if (!*ok)
	{
		/* ikefragd's reasons never quote key material */
		DBG1(DBG_IKE, "ikefrag-keys: ikefragd refused a message: %s", reply);
	}
	return TRUE;
}

/**
 * Copy the live SAs' lines for a resync (under the mutex), to send them
 * without it.
 */
static linked_list_t *snapshot_locked(private_ikefrag_keys_plugin_t *this)
{
	enumerator_t *enumerator;
	linked_list_t *list;
	sa_rec_t *rec;
	qline_t *q;
	void *key;

	list = linked_list_create();
	enumerator = this->sas->create_enumerator(this->sas);
	while (enumerator->enumerate(enumerator, &key, &rec))
	{
		INIT(q, .line = strndup(rec->keys, rec->keys_len),
			 .len = rec->keys_len);
		list->insert_last(list, q);
		if (rec->link)
		{
			INIT(q, .line = strdup(rec->link), .len = strlen(rec->link));
			list->insert_last(list, q);
		}
	}
	enumerator->destroy(enumerator);
	return list;
}

static void qline_destroy(qline_t *q)
{
	wipe_free(q->line, q->len);
	free(q);
}

static void close_fd(private_ikefrag_keys_plugin_t *this, int *fd)
{
	this->mutex->lock(this->mutex);
	this->fd = -1;
	this->mutex->unlock(this->mutex);
	if (*fd >= 0)
	{
		close(*fd);
	}
	*fd = -1;
}

/**
 * Whether the idle connection is still open: ikefragd sends nothing
 * unasked, so anything readable is its end of the connection.
 */
static bool peer_alive(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	char c;

	if (poll(&pfd, 1, 0) <= 0)
	{
		return TRUE;
	}
	if (pfd.revents & (POLLHUP | POLLERR))
	{
		return FALSE;
	}
	return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

static void *sender(private_ikefrag_keys_plugin_t *this)
{
	u_int backoff = BACKOFF_MIN_MS;
	bool logged = FALSE, ok;
	linked_list_t *resync;
	qline_t *q, line;
	int fd = -1, schedfd = -1;
	/* with timing: this thread's run-queue delay when it began waiting
	 * for the line it sends next */
	uint64_t rq0 = 0, rq;

	thread_cancelability(FALSE);
	/* named, so that top -H and /proc/PID/task/TID/comm show it */
	prctl(PR_SET_NAME, "ikefrag-keys");
	if (this->timing)
	{
		schedfd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
	}
	while (TRUE)
	{
		rq0 = run_delay(schedfd);
		this->mutex->lock(this->mutex);
		if (this->stop)
		{
			this->mutex->unlock(this->mutex);
			break;
		}
		this->mutex->unlock(this->mutex);
		if (fd < 0)
		{
			fd = connect_socket(this, &logged);
			if (fd < 0)
			{
				this->mutex->lock(this->mutex);
				if (!this->stop)
				{
					this->cond->timed_wait(this->cond, this->mutex, backoff);
				}
				this->mutex->unlock(this->mutex);
				backoff = min(backoff * 2, BACKOFF_MAX_MS);
				continue;
			}
			DBG1(DBG_CFG, "ikefrag-keys: connected to '%s'", this->path);
			logged = FALSE;
			backoff = BACKOFF_MIN_MS;
			this->mutex->lock(this->mutex);
			this->fd = fd;
			this->connects++;
			this->resync = TRUE;
			this->mutex->unlock(this->mutex);
		}
		this->mutex->lock(this->mutex);
		if (this->resync)
		{
			this->resync = FALSE;
			resync = snapshot_locked(this);
			this->mutex->unlock(this->mutex);
			ok = TRUE;
			while (resync->remove_first(resync, (void**)&q) == SUCCESS)
			{
				if (ok && q->line)
				{
					if (!send_line(this, fd, q->line, q->len, 0, 0, &ok))
					{
						close_fd(this, &fd);
					}
					else
					{
						this->mutex->lock(this->mutex);
						if (ok)
						{
							this->sent++;
						}
						else
						{
							this->rejected++;
						}
						this->mutex->unlock(this->mutex);
					}
				}
				qline_destroy(q);
				ok = fd >= 0;
			}
			resync->destroy(resync);
			if (fd < 0)
			{
				DBG1(DBG_CFG, "ikefrag-keys: connection to '%s' lost", this->path);
			}
			continue;
		}
		if (this->count == 0 && !this->stop)
		{
			/* idle: wake now and then to notice an ikefragd that went
			 * away, so that its successor gets the live SAs' keys at
			 * once, not with the next new SA */
			this->cond->timed_wait(this->cond, this->mutex, IDLE_PROBE_MS);
			if (this->count == 0 && !this->stop)
			{
				this->mutex->unlock(this->mutex);
				if (!peer_alive(fd))
				{
					close_fd(this, &fd);
					DBG1(DBG_CFG, "ikefrag-keys: '%s' closed the connection, "
						 "reconnecting", this->path);
				}
				continue;
			}
		}
		if (this->stop)
		{
			this->mutex->unlock(this->mutex);
			break;
		}
		line = this->ring[this->head];
		this->ring[this->head] = (qline_t){};
		this->head = (this->head + 1) % this->queue_max;
		this->count--;
		this->mutex->unlock(this->mutex);

		rq = run_delay(schedfd);
		if (!send_line(this, fd, line.line, line.len, line.tq,
					   rq > rq0 ? rq - rq0 : 0, &ok))
		{
			/* a keys line is covered by the resync after reconnecting, if
			 * its SA is still alive; a delete (or link) is not, and an
			 * ikefragd that merely timed out would keep the keys: it goes
			 * back to the head of the queue when there is room */
			if (!strstr(line.line, "\"sk_ei\""))
			{
				this->mutex->lock(this->mutex);
				if (this->count < this->queue_max)
				{
					this->head = (this->head + this->queue_max - 1) %
								 this->queue_max;
					this->ring[this->head] = line;
					this->count++;
					line.line = NULL;
				}
				this->mutex->unlock(this->mutex);
			}
			wipe_free(line.line, line.len);
			close_fd(this, &fd);
			DBG1(DBG_CFG, "ikefrag-keys: connection to '%s' lost, "
				 "reconnecting", this->path);
			continue;
		}
		wipe_free(line.line, line.len);
		this->mutex->lock(this->mutex);
		if (ok)
		{
			this->sent++;
		}
		else
		{
			this->rejected++;
		}
		this->mutex->unlock(this->mutex);
	}
	if (fd >= 0)
	{
		close_fd(this, &fd);
	}
	if (schedfd >= 0)
	{
		close(schedfd);
	}
	return NULL;
}

/** The plugin object charon holds; plugin_t first, for the same reason. */
typedef struct {
	ikefrag_keys_plugin_t public;
	private_ikefrag_keys_plugin_t *state;
} plugin_wrap_t;

METHOD(plugin_t, get_name, char*,
	plugin_wrap_t *wrap)
{
	return "ikefrag-keys";
}

static bool plugin_cb(plugin_wrap_t *wrap,
					  plugin_feature_t *feature, bool reg, void *cb_data)
{
	private_ikefrag_keys_plugin_t *this = wrap->state;

	if (reg)
	{
		this->sender = thread_create((thread_main_t)sender, this);
		if (!this->sender)
		{
			DBG1(DBG_CFG, "ikefrag-keys: cannot start the sender thread");
			return FALSE;
		}
		charon->bus->add_listener(charon->bus, &this->listener);
	}
	else
	{
		charon->bus->remove_listener(charon->bus, &this->listener);
		this->mutex->lock(this->mutex);
		this->stop = TRUE;
		if (this->fd >= 0)
		{
			shutdown(this->fd, SHUT_RDWR);
		}
		this->cond->broadcast(this->cond);
		this->mutex->unlock(this->mutex);
		if (this->sender)
		{
			this->sender->join(this->sender);
			this->sender = NULL;
		}
	}
	return TRUE;
}

METHOD(plugin_t, get_features, int,
	plugin_wrap_t *wrap, plugin_feature_t *features[])
{
	static plugin_feature_t f[] = {
		PLUGIN_CALLBACK((plugin_feature_callback_t)plugin_cb, NULL),
			PLUGIN_PROVIDE(CUSTOM, "ikefrag-keys"),
	};
	*features = f;
	return countof(f);
}

METHOD(plugin_t, destroy, void,
	plugin_wrap_t *wrap)
{
	private_ikefrag_keys_plugin_t *this = wrap->state;
	enumerator_t *enumerator;
	sa_rec_t *rec;
	void *key;
	u_int i;

	DBG1(DBG_CFG, "ikefrag-keys: %"PRIu64" messages sent, %"PRIu64" refused "
		 "by ikefragd, %"PRIu64" dropped (queue full), %"PRIu64" sockets "
		 "refused, %"PRIu64" connections", this->sent, this->rejected,
		 this->dropped, this->refused, this->connects);
	for (i = 0; i < this->count; i++)
	{
		qline_t *q = &this->ring[(this->head + i) % this->queue_max];
		wipe_free(q->line, q->len);
	}
	enumerator = this->sas->create_enumerator(this->sas);
	while (enumerator->enumerate(enumerator, &key, &rec))
	{
		rec_destroy(rec);
	}
	enumerator->destroy(enumerator);
	this->sas->destroy(this->sas);
	free(this->ring);
	this->cond->destroy(this->cond);
	this->mutex->destroy(this->mutex);
	free(this->path);
	free(this);
	free(wrap);
}

/**
 * The user name or number the socket must belong to.
 */
static bool resolve_user(const char *name, uid_t *uid)
{
	struct passwd pw, *res = NULL;
	char buf[1024], *end;
	unsigned long n;

	n = strtoul(name, &end, 10);
	if (*name && !*end)
	{
		*uid = n;
		return TRUE;
	}
	if (getpwnam_r(name, &pw, buf, sizeof(buf), &res) == 0 && res)
	{
		*uid = res->pw_uid;
		return TRUE;
	}
	return FALSE;
}

plugin_t *ikefrag_keys_plugin_create()
{
	private_ikefrag_keys_plugin_t *this;
	plugin_wrap_t *wrap;
	char *path, *user;
	uid_t uid;
	int queue, timeout;
	bool timing;

	path = lib->settings->get_str(lib->settings,
								  "%s.plugins.ikefrag-keys.socket", NULL, lib->ns);
	if (!path || !*path)
	{
		DBG1(DBG_CFG, "ikefrag-keys: charon.plugins.ikefrag-keys.socket is "
			 "not set, plugin disabled");
		return NULL;
	}
	if (strncmp(path, "unix://", 7) == 0)
	{
		path += 7;
	}
	if (path[0] != '/' || strlen(path) >= sizeof(((struct sockaddr_un*)0)->sun_path))
	{
		DBG1(DBG_CFG, "ikefrag-keys: socket '%s' must be an absolute path "
			 "shorter than %zu bytes", path,
			 sizeof(((struct sockaddr_un*)0)->sun_path));
		return NULL;
	}
	user = lib->settings->get_str(lib->settings,
								  "%s.plugins.ikefrag-keys.user", "root", lib->ns);
	if (!resolve_user(user, &uid))
	{
		DBG1(DBG_CFG, "ikefrag-keys: unknown user '%s' in "
			 "charon.plugins.ikefrag-keys.user", user);
		return NULL;
	}
	queue = lib->settings->get_int(lib->settings,
								   "%s.plugins.ikefrag-keys.queue", DEFAULT_QUEUE, lib->ns);
	timeout = lib->settings->get_int(lib->settings,
								"%s.plugins.ikefrag-keys.timeout", DEFAULT_TIMEOUT_MS, lib->ns);
	timing = lib->settings->get_bool(lib->settings,
								"%s.plugins.ikefrag-keys.timing", FALSE, lib->ns);
	if (queue < 1 || timeout < 1)
	{
		DBG1(DBG_CFG, "ikefrag-keys: queue and timeout must be positive");
		return NULL;
	}

	INIT(this,
		.listener = {
			.ike_derived_keys = _ike_derived_keys,
			.ike_keys = _ike_keys,
			.ike_rekey = _ike_rekey,
			.ike_state_change = _ike_state_change,
		},
		.path = strdup(path),
		.uid = uid,
		.queue_max = queue,
		.timeout_ms = timeout,
		.timing = timing,
		.mutex = mutex_create(MUTEX_TYPE_DEFAULT),
		.cond = condvar_create(CONDVAR_TYPE_DEFAULT),
		.ring = calloc(queue, sizeof(qline_t)),
		.sas = hashtable_create(hashtable_hash_ptr, hashtable_equals_ptr, 128),
		.fd = -1,
	);
	INIT(wrap,
		.public = {
			.plugin = {
				.get_name = _get_name,
				.get_features = _get_features,
				.destroy = _destroy,
			},
		},
		.state = this,
	);
	DBG1(DBG_CFG, "ikefrag-keys: sending IKE SA keys to '%s' (owner uid %u, "
		 "queue %u%s)", this->path, this->uid, this->queue_max,
		 this->timing ? ", timing" : "");
	return &wrap->public.plugin;
}
