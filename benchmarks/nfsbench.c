/*
 * nfsbench: a small NFSv3 load generator for benchmarks/bench.py.
 *
 * It speaks NFSv3 through libnfs's raw asynchronous RPC API (rpc_nfs3_*_async
 * and rpc_service() driven from one poll() loop), so many requests are in
 * flight on one connection, as a kernel client would have them.  MOUNT and
 * NFS are reached on ports given on the command line: no portmapper.
 *
 * Every workload prints one JSON object on stdout and exits 0, or prints
 * "nfsbench: ..." on stderr and exits 1 on the first error (an RPC failure, an
 * NFS status other than NFS3_OK, a short transfer, data that is not what was
 * written, or the --timeout deadline passing).  The one exception is
 * NFS3ERR_JUKEBOX in the metadata workload: that call is sent again after a
 * short wait, as a client would, and the retries are counted in the result.
 *
 * Data written by this program carries, at every 4 KiB boundary of the file,
 * the 64-bit file offset xor a constant; every READ checks those stamps.
 *
 *   nfsbench [--host H] --nfsport P --mountport M [--export /export]
 *            [--uid U] [--gid G] [--timeout SECONDS] WORKLOAD ARGS...
 *
 *   seqwrite NAME SIZE BLOCK DEPTH        CREATE, WRITE (UNSTABLE), COMMIT
 *   seqread  NAME SIZE BLOCK DEPTH        LOOKUP, READ
 *   randread  NAME FILESIZE IO DEPTH COUNT
 *   randwrite NAME FILESIZE IO DEPTH COUNT (UNSTABLE, then one COMMIT)
 *   meta DIR NFILES FILESIZE DEPTH        MKDIR; CREATE+WRITE+COMMIT each;
 *                                         LOOKUP+GETATTR each; READDIRPLUS;
 *                                         REMOVE each; RMDIR
 *   conns NAME FILESIZE CLIENTS OPS IO DEPTH
 *                                         CLIENTS connections, each OPS calls
 *                                         alternating GETATTR and READ
 *   remove NAME                           REMOVE (missing is fine)
 *   fsinfo                                print FSINFO's transfer sizes
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <nfsc/libnfs.h>
#include <nfsc/libnfs-raw.h>
#include <nfsc/libnfs-raw-mount.h>
#include <nfsc/libnfs-raw-nfs.h>

#define STAMP_EVERY 4096
#define STAMP_MAGIC 0x5a17f00dd1770f5ULL
#define MAX_DEPTH 256
#define MAX_CLIENTS 256
#define NAME_LEN 64

static const char *host = "127.0.0.1";
static int nfsport;
static int mountport;
static const char *export_path = "/export";
static double deadline;
static int client_uid = -1;
static int client_gid = -1;
static nfs_fh3 root_fh;

/* -- small helpers ------------------------------------------------------- */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("nfsbench: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void *xmalloc(size_t size)
{
	void *p = malloc(size ? size : 1);

	if (p == NULL)
		die("out of memory (%zu bytes)", size);
	return p;
}

static uint64_t parse_u64(const char *text, const char *what)
{
	char *end;
	unsigned long long value;

	errno = 0;
	value = strtoull(text, &end, 10);
	if (errno || *text == '\0' || *end != '\0')
		die("bad %s: %s", what, text);
	return (uint64_t)value;
}

static void fh_copy(nfs_fh3 *dst, const nfs_fh3 *src)
{
	dst->data.data_len = src->data.data_len;
	dst->data.data_val = xmalloc(src->data.data_len);
	memcpy(dst->data.data_val, src->data.data_val, src->data.data_len);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Fill buf (which will live at file offset off) with the stamped pattern. */
static void stamp(char *buf, uint64_t off, size_t len)
{
	size_t i;

	for (i = 0; i + sizeof(uint64_t) <= len; i += STAMP_EVERY) {
		uint64_t value = (off + i) ^ STAMP_MAGIC;

		memcpy(buf + i, &value, sizeof(value));
	}
}

static void check_stamps(const char *buf, uint64_t off, size_t len)
{
	size_t i;

	for (i = 0; i + sizeof(uint64_t) <= len; i += STAMP_EVERY) {
		uint64_t value;

		memcpy(&value, buf + i, sizeof(value));
		if (value != ((off + i) ^ STAMP_MAGIC))
			die("data at offset %" PRIu64 " is not what was written", off + i);
	}
}

static void fill_noise(char *buf, size_t len)
{
	size_t i;

	for (i = 0; i + sizeof(uint64_t) <= len; i += sizeof(uint64_t)) {
		uint64_t value = rng();

		memcpy(buf + i, &value, sizeof(value));
	}
}

static void check_rpc(struct rpc_context *rpc, int status, void *data, const char *what)
{
	if (status != RPC_STATUS_SUCCESS)
		die("%s: RPC failed (%d): %s", what, status,
		    status == RPC_STATUS_ERROR && data ? (char *)data : rpc_get_error(rpc));
}

static void check_nfs(int status, const char *what)
{
	if (status != NFS3_OK)
		die("%s: NFS status %d", what, status);
}

/* -- the event loop -------------------------------------------------------- */

/* Wait for and service events on every context once; die past the deadline. */
static void pump(struct rpc_context **rpcs, int count)
{
	struct pollfd fds[MAX_CLIENTS];
	int i, ready;

	if (now() > deadline)
		die("timed out (the --timeout deadline passed)");
	for (i = 0; i < count; i++) {
		fds[i].fd = rpc_get_fd(rpcs[i]);
		fds[i].events = (short)rpc_which_events(rpcs[i]);
		fds[i].revents = 0;
	}
	ready = poll(fds, (nfds_t)count, 100);
	if (ready < 0) {
		if (errno == EINTR)
			return;
		die("poll: %s", strerror(errno));
	}
	for (i = 0; i < count; i++) {
		if (rpc_service(rpcs[i], fds[i].revents) < 0)
			die("connection %d failed: %s", i, rpc_get_error(rpcs[i]));
	}
}

static void pump_one(struct rpc_context *rpc)
{
	pump(&rpc, 1);
}

static void wait_flag(struct rpc_context *rpc, const int *flag)
{
	while (!*flag)
		pump_one(rpc);
}

/* -- connecting and mounting ------------------------------------------------ */

static void connected_cb(struct rpc_context *rpc, int status, void *data, void *private_data)
{
	check_rpc(rpc, status, data, "connect");
	*(int *)private_data = 1;
}

static struct rpc_context *connect_program(int port, int program, int version)
{
	struct rpc_context *rpc = rpc_init_context();
	int done = 0;

	if (rpc == NULL)
		die("rpc_init_context failed");
	if (client_uid >= 0)
		rpc_set_uid(rpc, client_uid);
	if (client_gid >= 0)
		rpc_set_gid(rpc, client_gid);
	if (rpc_connect_port_async(rpc, host, port, program, version, connected_cb, &done) != 0)
		die("connect to %s:%d: %s", host, port, rpc_get_error(rpc));
	wait_flag(rpc, &done);
	return rpc;
}

static void mnt_cb(struct rpc_context *rpc, int status, void *data, void *private_data)
{
	mountres3 *res = data;

	check_rpc(rpc, status, data, "MNT");
	if (res->fhs_status != MNT3_OK)
		die("MNT %s: mount status %d", export_path, res->fhs_status);
	root_fh.data.data_len = res->mountres3_u.mountinfo.fhandle.fhandle3_len;
	root_fh.data.data_val = xmalloc(root_fh.data.data_len);
	memcpy(root_fh.data.data_val, res->mountres3_u.mountinfo.fhandle.fhandle3_val,
	       root_fh.data.data_len);
	*(int *)private_data = 1;
}

/* MOUNT the export (root_fh) and return a connection to NFS. */
static struct rpc_context *mount_and_connect(void)
{
	struct rpc_context *mount_rpc = connect_program(mountport, MOUNT_PROGRAM, MOUNT_V3);
	int done = 0;

	if (rpc_mount3_mnt_async(mount_rpc, mnt_cb, (char *)export_path, &done) != 0)
		die("MNT: %s", rpc_get_error(mount_rpc));
	wait_flag(mount_rpc, &done);
	rpc_disconnect(mount_rpc, "done");
	rpc_destroy_context(mount_rpc);
	return connect_program(nfsport, NFS_PROGRAM, NFS_V3);
}

/* -- one call at a time (set-up) -------------------------------------------- */

struct sync_call {
	int done;
	int status;
	nfs_fh3 fh;
	FSINFO3resok fsinfo;
};

static void handle_reply(struct sync_call *call, int status, const nfs_fh3 *fh)
{
	call->status = status;
	if (status == NFS3_OK && fh != NULL)
		fh_copy(&call->fh, fh);
	call->done = 1;
}

static void lookup_sync_cb(struct rpc_context *rpc, int status, void *data, void *private_data)
{
	LOOKUP3res *res = data;

	check_rpc(rpc, status, data, "LOOKUP");
	handle_reply(private_data, res->status, &res->LOOKUP3res_u.resok.object);
}

static int lookup_sync(struct rpc_context *rpc, const nfs_fh3 *dir, const char *name, nfs_fh3 *out)
{
	struct sync_call call = {0};
	LOOKUP3args args = {0};

	args.what.dir = *dir;
	args.what.name = (char *)name;
	if (rpc_nfs3_lookup_async(rpc, lookup_sync_cb, &args, &call) != 0)
		die("LOOKUP %s: %s", name, rpc_get_error(rpc));
	wait_flag(rpc, &call.done);
	if (call.status == NFS3_OK)
		*out = call.fh;
	return call.status;
}

static const nfs_fh3 *created_handle(post_op_fh3 *obj, const char *what)
{
	if (!obj->handle_follows)
		die("%s: the server returned no file handle", what);
	return &obj->post_op_fh3_u.handle;
}

static void create_sync_cb(struct rpc_context *rpc, int status, void *data, void *private_data)
{
	CREATE3res *res = data;

	check_rpc(rpc, status, data, "CREATE");
	handle_reply(private_data, res->status,
		     res->status == NFS3_OK ? created_handle(&res->CREATE3res_u.resok.obj, "CREATE")
					    : NULL);
}

static void fill_create_args(CREATE3args *args, const nfs_fh3 *dir, const char *name, int truncate)
{
	memset(args, 0, sizeof(*args));
	args->where.dir = *dir;
	args->where.name = (char *)name;
	args->how.mode = UNCHECKED;
	args->how.createhow3_u.obj_attributes.mode.set_it = 1;
	args->how.createhow3_u.obj_attributes.mode.set_mode3_u.mode = 0644;
	if (truncate) {
		args->how.createhow3_u.obj_attributes.size.set_it = 1;
		args->how.createhow3_u.obj_attributes.size.set_size3_u.size = 0;
	}
}

/* CREATE (UNCHECKED, size 0): a new or emptied file. */
static void create_sync(struct rpc_context *rpc, const nfs_fh3 *dir, const char *name, nfs_fh3 *out)
{
	struct sync_call call = {0};
	CREATE3args args;

	fill_create_args(&args, dir, name, 1);
	if (rpc_nfs3_create_async(rpc, create_sync_cb, &args, &call) != 0)
		die("CREATE %s: %s", name, rpc_get_error(rpc));
	wait_flag(rpc, &call.done);
	check_nfs(call.status, "CREATE");
	*out = call.fh;
}

static void mkdir_sync_cb(struct rpc_context *rpc, int status, void *data, void *private_data)
{
	MKDIR3res *res = data;

	check_rpc(rpc, status, data, "MKDIR");
	handle_reply(private_data, res->status,
		     res->status == NFS3_OK ? created_handle(&res->MKDIR3res_u.resok.obj, "MKDIR")
					    : NULL);
}

static void mkdir_sync(struct rpc_context *rpc, const char *name, nfs_fh3 *out)
{
	struct sync_call call = {0};
	MKDIR3args args = {0};

	args.where.dir = root_fh;
	args.where.name = (char *)name;
	args.attributes.mode.set_it = 1;
	args.attributes.mode.set_mode3_u.mode = 0755;
	if (rpc_nfs3_mkdir_async(rpc, mkdir_sync_cb, &args, &call) != 0)
		die("MKDIR %s: %s", name, rpc_get_error(rpc));
	wait_flag(rpc, &call.done);
	check_nfs(call.status, "MKDIR");
	*out = call.fh;
}

static void status_sync_cb(struct rpc_context *rpc, int status, void *data, void *private_data)
{
	/* REMOVE3res, RMDIR3res and COMMIT3res all start with their nfsstat3. */
	check_rpc(rpc, status, data, "call");
	handle_reply(private_data, *(nfsstat3 *)data, NULL);
}

static int remove_sync(struct rpc_context *rpc, const nfs_fh3 *dir, const char *name)
{
	struct sync_call call = {0};
	REMOVE3args args = {0};

	args.object.dir = *dir;
	args.object.name = (char *)name;
	if (rpc_nfs3_remove_async(rpc, status_sync_cb, &args, &call) != 0)
		die("REMOVE %s: %s", name, rpc_get_error(rpc));
	wait_flag(rpc, &call.done);
	return call.status;
}

static void rmdir_sync(struct rpc_context *rpc, const char *name)
{
	struct sync_call call = {0};
	RMDIR3args args = {0};

	args.object.dir = root_fh;
	args.object.name = (char *)name;
	if (rpc_nfs3_rmdir_async(rpc, status_sync_cb, &args, &call) != 0)
		die("RMDIR %s: %s", name, rpc_get_error(rpc));
	wait_flag(rpc, &call.done);
	check_nfs(call.status, "RMDIR");
}

static void commit_sync(struct rpc_context *rpc, const nfs_fh3 *fh)
{
	struct sync_call call = {0};
	COMMIT3args args = {0};

	args.file = *fh;
	if (rpc_nfs3_commit_async(rpc, status_sync_cb, &args, &call) != 0)
		die("COMMIT: %s", rpc_get_error(rpc));
	wait_flag(rpc, &call.done);
	check_nfs(call.status, "COMMIT");
}

static void fsinfo_sync_cb(struct rpc_context *rpc, int status, void *data, void *private_data)
{
	FSINFO3res *res = data;
	struct sync_call *call = private_data;

	check_rpc(rpc, status, data, "FSINFO");
	if (res->status == NFS3_OK)
		call->fsinfo = res->FSINFO3res_u.resok;
	handle_reply(call, res->status, NULL);
}

static FSINFO3resok fsinfo_sync(struct rpc_context *rpc)
{
	struct sync_call call = {0};
	FSINFO3args args = {0};

	args.fsroot = root_fh;
	if (rpc_nfs3_fsinfo_async(rpc, fsinfo_sync_cb, &args, &call) != 0)
		die("FSINFO: %s", rpc_get_error(rpc));
	wait_flag(rpc, &call.done);
	check_nfs(call.status, "FSINFO");
	return call.fsinfo;
}

static nfs_fh3 lookup_root(struct rpc_context *rpc, const char *name)
{
	nfs_fh3 fh;
	int status = lookup_sync(rpc, &root_fh, name, &fh);

	if (status != NFS3_OK)
		die("LOOKUP %s: NFS status %d", name, status);
	return fh;
}

/* -- streaming I/O: many READs or WRITEs in flight -------------------------- */

struct io_slot {
	struct io_job *job;
	int busy;
	uint64_t offset;
	uint32_t count;
	char *buf;
};

struct io_job {
	struct rpc_context *rpc;
	nfs_fh3 fh;
	int writing;
	uint32_t count;
	int depth;
	int inflight;
	uint64_t completed;
	uint64_t bytes;
	struct io_slot slots[MAX_DEPTH];
};

static void io_done(struct io_slot *slot)
{
	slot->busy = 0;
	slot->job->inflight--;
	slot->job->completed++;
	slot->job->bytes += slot->count;
}

static void write_cb(struct rpc_context *rpc, int status, void *data, void *private_data)
{
	WRITE3res *res = data;
	struct io_slot *slot = private_data;

	check_rpc(rpc, status, data, "WRITE");
	check_nfs(res->status, "WRITE");
	if (res->WRITE3res_u.resok.count != slot->count)
		die("WRITE at %" PRIu64 ": short write (%u of %u)", slot->offset,
		    res->WRITE3res_u.resok.count, slot->count);
	io_done(slot);
}

static void read_cb(struct rpc_context *rpc, int status, void *data, void *private_data)
{
	READ3res *res = data;
	struct io_slot *slot = private_data;

	check_rpc(rpc, status, data, "READ");
	check_nfs(res->status, "READ");
	if (res->READ3res_u.resok.count != slot->count ||
	    res->READ3res_u.resok.data.data_len != slot->count)
		die("READ at %" PRIu64 ": short read (%u of %u)", slot->offset,
		    res->READ3res_u.resok.count, slot->count);
	check_stamps(res->READ3res_u.resok.data.data_val, slot->offset, slot->count);
	io_done(slot);
}

static struct io_slot *free_slot(struct io_job *job)
{
	int i;

	for (i = 0; i < job->depth; i++)
		if (!job->slots[i].busy)
			return &job->slots[i];
	die("no free I/O slot");
	return NULL;
}

static void io_issue(struct io_job *job, uint64_t offset, uint32_t count)
{
	struct io_slot *slot = free_slot(job);
	int rc;

	slot->busy = 1;
	slot->offset = offset;
	slot->count = count;
	job->inflight++;
	if (job->writing) {
		WRITE3args args = {0};

		stamp(slot->buf, offset, count);
		args.file = job->fh;
		args.offset = offset;
		args.count = count;
		args.stable = UNSTABLE;
		args.data.data_len = count;
		args.data.data_val = slot->buf;
		rc = rpc_nfs3_write_async(job->rpc, write_cb, &args, slot);
	} else {
		READ3args args = {0};

		args.file = job->fh;
		args.offset = offset;
		args.count = count;
		rc = rpc_nfs3_read_async(job->rpc, read_cb, &args, slot);
	}
	if (rc != 0)
		die("queueing %s: %s", job->writing ? "WRITE" : "READ", rpc_get_error(job->rpc));
}

static void io_job_init(struct io_job *job, struct rpc_context *rpc, nfs_fh3 fh, int writing,
			uint32_t count, int depth)
{
	int i;

	if (depth < 1 || depth > MAX_DEPTH)
		die("depth must be 1..%d", MAX_DEPTH);
	memset(job, 0, sizeof(*job));
	job->rpc = rpc;
	job->fh = fh;
	job->writing = writing;
	job->count = count;
	job->depth = depth;
	for (i = 0; i < depth; i++) {
		job->slots[i].job = job;
		if (writing) {
			job->slots[i].buf = xmalloc(count);
			fill_noise(job->slots[i].buf, count);
		}
	}
}

/* Sequential transfer of size bytes in count-byte calls, depth at a time. */
static void run_sequential(struct io_job *job, uint64_t size)
{
	uint64_t next = 0;

	while (next < size || job->inflight > 0) {
		while (next < size && job->inflight < job->depth) {
			uint64_t left = size - next;
			uint32_t count = left < job->count ? (uint32_t)left : job->count;

			io_issue(job, next, count);
			next += count;
		}
		pump_one(job->rpc);
	}
}

/* total random count-byte calls at count-aligned offsets below filesize. */
static void run_random(struct io_job *job, uint64_t filesize, uint64_t total)
{
	uint64_t blocks = filesize / job->count, issued = 0;

	if (blocks == 0)
		die("file smaller than one I/O");
	while (issued < total || job->inflight > 0) {
		while (issued < total && job->inflight < job->depth) {
			io_issue(job, (rng() % blocks) * job->count, job->count);
			issued++;
		}
		pump_one(job->rpc);
	}
}

static void report_io(const char *workload, struct io_job *job, double seconds, uint32_t block)
{
	printf("{\"workload\": \"%s\", \"bytes\": %" PRIu64 ", \"ops\": %" PRIu64
	       ", \"seconds\": %.6f, \"block\": %u, \"depth\": %d}\n",
	       workload, job->bytes, job->completed, seconds, block, job->depth);
}

static int cmd_seqwrite(struct rpc_context *rpc, char **argv)
{
	static struct io_job job;
	uint64_t size = parse_u64(argv[1], "size");
	uint32_t block = (uint32_t)parse_u64(argv[2], "block");
	int depth = (int)parse_u64(argv[3], "depth");
	nfs_fh3 fh;
	double start;

	create_sync(rpc, &root_fh, argv[0], &fh);
	io_job_init(&job, rpc, fh, 1, block, depth);
	start = now();
	run_sequential(&job, size);
	commit_sync(rpc, &fh);
	report_io("seqwrite", &job, now() - start, block);
	return 0;
}

static int cmd_seqread(struct rpc_context *rpc, char **argv)
{
	static struct io_job job;
	uint64_t size = parse_u64(argv[1], "size");
	uint32_t block = (uint32_t)parse_u64(argv[2], "block");
	int depth = (int)parse_u64(argv[3], "depth");
	double start;

	io_job_init(&job, rpc, lookup_root(rpc, argv[0]), 0, block, depth);
	start = now();
	run_sequential(&job, size);
	report_io("seqread", &job, now() - start, block);
	return 0;
}

static int cmd_random(struct rpc_context *rpc, char **argv, int writing)
{
	static struct io_job job;
	uint64_t filesize = parse_u64(argv[1], "file size");
	uint32_t io = (uint32_t)parse_u64(argv[2], "I/O size");
	int depth = (int)parse_u64(argv[3], "depth");
	uint64_t total = parse_u64(argv[4], "count");
	nfs_fh3 fh = lookup_root(rpc, argv[0]);
	double start;

	if (io % STAMP_EVERY != 0)
		die("random I/O size must be a multiple of %d", STAMP_EVERY);
	io_job_init(&job, rpc, fh, writing, io, depth);
	start = now();
	run_random(&job, filesize, total);
	if (writing)
		commit_sync(rpc, &fh);
	report_io(writing ? "randwrite" : "randread", &job, now() - start, io);
	return 0;
}

/* -- metadata: one state machine per file ------------------------------------ */

/*
 * Each file goes through the calls of a phase in order (CREATE, WRITE, COMMIT;
 * LOOKUP, GETATTR; REMOVE).  NFS3ERR_JUKEBOX ("try again later") is what a
 * server says when it cannot do a call now; like any client, this one then
 * waits (JUKEBOX_DELAY) and sends the same call again, and counts it.
 */
#define JUKEBOX_DELAY 0.05
#define JUKEBOX_LIMIT_PER_FILE 50

enum meta_phase { PHASE_CREATE, PHASE_STAT, PHASE_REMOVE };

struct meta_file {
	struct meta_job *job;
	char name[NAME_LEN];
	nfs_fh3 fh;
	int step;
	double retry_at;
};

struct meta_job {
	struct rpc_context *rpc;
	nfs_fh3 dir;
	enum meta_phase phase;
	uint32_t filesize;
	char *data;
	int inflight;
	uint64_t nfiles;
	uint64_t completed;
	uint64_t calls;
	uint64_t jukebox;
	struct meta_file *files;
	struct meta_file **waiting;
	uint64_t nwaiting;
};

static void meta_issue(struct meta_file *file);

static void meta_file_done(struct meta_file *file)
{
	file->job->inflight--;
	file->job->completed++;
}

/* True (and the call is queued again for later) if the server said JUKEBOX. */
static int meta_jukebox(struct meta_file *file, int status)
{
	struct meta_job *job = file->job;

	if (status != NFS3ERR_JUKEBOX)
		return 0;
	if (++job->jukebox > job->nfiles * JUKEBOX_LIMIT_PER_FILE + 1000)
		die("%s: the server keeps answering NFS3ERR_JUKEBOX (%" PRIu64 " times)", file->name,
		    job->jukebox);
	file->retry_at = now() + JUKEBOX_DELAY;
	job->waiting[job->nwaiting++] = file;
	return 1;
}

static void meta_next(struct meta_file *file, int last_step)
{
	if (file->step == last_step) {
		meta_file_done(file);
	} else {
		file->step++;
		meta_issue(file);
	}
}

static void meta_cb(struct rpc_context *rpc, int status, void *data, void *private_data)
{
	struct meta_file *file = private_data;
	struct meta_job *job = file->job;
	/* Every *3res starts with its nfsstat3. */
	int nfs_status = data && status == RPC_STATUS_SUCCESS ? (int)*(nfsstat3 *)data : 0;

	check_rpc(rpc, status, data, file->name);
	if (meta_jukebox(file, nfs_status))
		return;
	if (job->phase == PHASE_CREATE && file->step == 0) {
		CREATE3res *res = data;

		check_nfs(res->status, "CREATE");
		fh_copy(&file->fh, created_handle(&res->CREATE3res_u.resok.obj, "CREATE"));
	} else if (job->phase == PHASE_CREATE && file->step == 1) {
		WRITE3res *res = data;

		check_nfs(res->status, "WRITE");
		if (res->WRITE3res_u.resok.count != job->filesize)
			die("WRITE %s: short write", file->name);
	} else if (job->phase == PHASE_STAT && file->step == 0) {
		LOOKUP3res *res = data;

		check_nfs(res->status, "LOOKUP");
		if (res->LOOKUP3res_u.resok.object.data.data_len != file->fh.data.data_len ||
		    memcmp(res->LOOKUP3res_u.resok.object.data.data_val, file->fh.data.data_val,
			   file->fh.data.data_len) != 0)
			die("LOOKUP %s: a different handle than CREATE returned", file->name);
	} else if (job->phase == PHASE_STAT && file->step == 1) {
		GETATTR3res *res = data;

		check_nfs(res->status, "GETATTR");
		if (res->GETATTR3res_u.resok.obj_attributes.size != job->filesize)
			die("GETATTR %s: size %" PRIu64 ", expected %u", file->name,
			    (uint64_t)res->GETATTR3res_u.resok.obj_attributes.size, job->filesize);
	} else if (job->phase == PHASE_REMOVE) {
		check_nfs(nfs_status, "REMOVE");
		free(file->fh.data.data_val);
		file->fh.data.data_val = NULL;
	} else {
		check_nfs(nfs_status, "COMMIT");
	}
	meta_next(file, job->phase == PHASE_CREATE ? 2 : job->phase == PHASE_STAT ? 1 : 0);
}

static void meta_issue(struct meta_file *file)
{
	struct meta_job *job = file->job;
	int rc;

	job->calls++;
	if (job->phase == PHASE_CREATE && file->step == 0) {
		CREATE3args args;

		fill_create_args(&args, &job->dir, file->name, 0);
		rc = rpc_nfs3_create_async(job->rpc, meta_cb, &args, file);
	} else if (job->phase == PHASE_CREATE && file->step == 1) {
		WRITE3args args = {0};

		args.file = file->fh;
		args.count = job->filesize;
		args.stable = UNSTABLE;
		args.data.data_len = job->filesize;
		args.data.data_val = job->data;
		rc = rpc_nfs3_write_async(job->rpc, meta_cb, &args, file);
	} else if (job->phase == PHASE_CREATE) {
		COMMIT3args args = {0};

		args.file = file->fh;
		rc = rpc_nfs3_commit_async(job->rpc, meta_cb, &args, file);
	} else if (job->phase == PHASE_STAT && file->step == 0) {
		LOOKUP3args args = {0};

		args.what.dir = job->dir;
		args.what.name = file->name;
		rc = rpc_nfs3_lookup_async(job->rpc, meta_cb, &args, file);
	} else if (job->phase == PHASE_STAT) {
		GETATTR3args args = {0};

		args.object = file->fh;
		rc = rpc_nfs3_getattr_async(job->rpc, meta_cb, &args, file);
	} else {
		REMOVE3args args = {0};

		args.object.dir = job->dir;
		args.object.name = file->name;
		rc = rpc_nfs3_remove_async(job->rpc, meta_cb, &args, file);
	}
	if (rc != 0)
		die("queueing a call: %s", rpc_get_error(job->rpc));
}

/* Send again the calls that got JUKEBOX and have waited long enough. */
static void meta_retry_due(struct meta_job *job)
{
	double t = now();
	uint64_t i = 0;

	while (i < job->nwaiting) {
		struct meta_file *file = job->waiting[i];

		if (file->retry_at <= t) {
			job->waiting[i] = job->waiting[--job->nwaiting];
			meta_issue(file);
		} else {
			i++;
		}
	}
}

/* Run one phase over every file, depth files at a time; return the seconds taken. */
static double meta_phase(struct meta_job *job, enum meta_phase phase, int depth)
{
	uint64_t next = 0;
	double start = now();

	job->phase = phase;
	job->completed = 0;
	while (job->completed < job->nfiles) {
		while (next < job->nfiles && job->inflight < depth) {
			struct meta_file *file = &job->files[next++];

			file->step = 0;
			job->inflight++;
			meta_issue(file);
		}
		meta_retry_due(job);
		pump_one(job->rpc);
	}
	return now() - start;
}

struct readdir_state {
	int done;
	uint64_t entries;
	uint64_t cookie;
	cookieverf3 verf;
	int eof;
};

static void readdirplus_cb(struct rpc_context *rpc, int status, void *data, void *private_data)
{
	READDIRPLUS3res *res = data;
	struct readdir_state *state = private_data;
	entryplus3 *entry;

	check_rpc(rpc, status, data, "READDIRPLUS");
	check_nfs(res->status, "READDIRPLUS");
	for (entry = res->READDIRPLUS3res_u.resok.reply.entries; entry; entry = entry->nextentry) {
		if (strcmp(entry->name, ".") != 0 && strcmp(entry->name, "..") != 0) {
			if (!entry->name_attributes.attributes_follow ||
			    !entry->name_handle.handle_follows)
				die("READDIRPLUS %s: no attributes or handle", entry->name);
			state->entries++;
		}
		state->cookie = entry->cookie;
	}
	memcpy(state->verf, res->READDIRPLUS3res_u.resok.cookieverf, sizeof(cookieverf3));
	state->eof = (int)res->READDIRPLUS3res_u.resok.reply.eof;
	state->done = 1;
}

/* List the whole directory with READDIRPLUS; return the entries seen (not . and ..). */
static uint64_t list_directory(struct meta_job *job, uint64_t *calls)
{
	struct readdir_state state = {0};
	int rounds = 0;

	while (!state.eof) {
		READDIRPLUS3args args = {0};

		if (++rounds > 1000000)
			die("READDIRPLUS never reached eof");
		args.dir = job->dir;
		args.cookie = state.cookie;
		memcpy(args.cookieverf, state.verf, sizeof(cookieverf3));
		args.dircount = 16384;
		args.maxcount = 65536;
		state.done = 0;
		if (rpc_nfs3_readdirplus_async(job->rpc, readdirplus_cb, &args, &state) != 0)
			die("queueing READDIRPLUS: %s", rpc_get_error(job->rpc));
		(*calls)++;
		wait_flag(job->rpc, &state.done);
	}
	return state.entries;
}

static int cmd_meta(struct rpc_context *rpc, char **argv)
{
	struct meta_job job = {0};
	const char *dirname = argv[0];
	uint64_t nfiles = parse_u64(argv[1], "file count");
	uint32_t filesize = (uint32_t)parse_u64(argv[2], "file size");
	int depth = (int)parse_u64(argv[3], "depth");
	double create_s, stat_s, readdir_s, remove_s, start;
	uint64_t i, listed, create_calls, stat_calls, readdir_calls = 0;
	uint64_t create_jukebox, stat_jukebox;

	if (depth < 1 || depth > MAX_DEPTH)
		die("depth must be 1..%d", MAX_DEPTH);
	job.rpc = rpc;
	job.filesize = filesize;
	job.data = xmalloc(filesize);
	fill_noise(job.data, filesize);
	job.nfiles = nfiles;
	job.files = xmalloc(sizeof(struct meta_file) * (nfiles ? nfiles : 1));
	memset(job.files, 0, sizeof(struct meta_file) * (nfiles ? nfiles : 1));
	job.waiting = xmalloc(sizeof(struct meta_file *) * (nfiles ? nfiles : 1));
	for (i = 0; i < nfiles; i++) {
		job.files[i].job = &job;
		snprintf(job.files[i].name, NAME_LEN, "file-%08" PRIu64, i);
	}
	mkdir_sync(rpc, dirname, &job.dir);

	create_s = meta_phase(&job, PHASE_CREATE, depth);
	create_calls = job.calls;
	create_jukebox = job.jukebox;
	job.calls = 0;
	stat_s = meta_phase(&job, PHASE_STAT, depth);
	stat_calls = job.calls;
	stat_jukebox = job.jukebox - create_jukebox;
	job.calls = 0;
	start = now();
	listed = list_directory(&job, &readdir_calls);
	readdir_s = now() - start;
	if (listed != nfiles)
		die("READDIRPLUS listed %" PRIu64 " entries, expected %" PRIu64, listed, nfiles);
	remove_s = meta_phase(&job, PHASE_REMOVE, depth);
	rmdir_sync(rpc, dirname);

	printf("{\"workload\": \"meta\", \"files\": %" PRIu64 ", \"depth\": %d"
	       ", \"create_seconds\": %.6f, \"create_calls\": %" PRIu64
	       ", \"stat_seconds\": %.6f, \"stat_calls\": %" PRIu64
	       ", \"readdir_seconds\": %.6f, \"readdir_calls\": %" PRIu64
	       ", \"readdir_entries\": %" PRIu64 ", \"remove_seconds\": %.6f"
	       ", \"jukebox\": %" PRIu64 ", \"jukebox_create\": %" PRIu64
	       ", \"jukebox_stat\": %" PRIu64 ", \"jukebox_remove\": %" PRIu64 "}\n",
	       nfiles, depth, create_s, create_calls, stat_s, stat_calls, readdir_s, readdir_calls,
	       listed, remove_s, job.jukebox, create_jukebox, stat_jukebox,
	       job.jukebox - create_jukebox - stat_jukebox);
	return 0;
}

/* -- many connections ---------------------------------------------------------- */

struct client {
	struct rpc_context *rpc;
	uint64_t issued;
	uint64_t completed;
	int inflight;
};

struct client_call {
	struct client *client;
	uint64_t offset;
	uint32_t count;
};

static uint64_t conns_filesize;

static void conns_getattr_cb(struct rpc_context *rpc, int status, void *data, void *private_data)
{
	GETATTR3res *res = data;
	struct client_call *call = private_data;

	check_rpc(rpc, status, data, "GETATTR");
	check_nfs(res->status, "GETATTR");
	if (res->GETATTR3res_u.resok.obj_attributes.size != conns_filesize)
		die("GETATTR: unexpected size");
	call->client->inflight--;
	call->client->completed++;
	free(call);
}

static void conns_read_cb(struct rpc_context *rpc, int status, void *data, void *private_data)
{
	READ3res *res = data;
	struct client_call *call = private_data;

	check_rpc(rpc, status, data, "READ");
	check_nfs(res->status, "READ");
	if (res->READ3res_u.resok.data.data_len != call->count)
		die("READ: short read");
	check_stamps(res->READ3res_u.resok.data.data_val, call->offset, call->count);
	call->client->inflight--;
	call->client->completed++;
	free(call);
}

static int cmd_conns(struct rpc_context *first, char **argv)
{
	static struct client clients[MAX_CLIENTS];
	struct rpc_context *rpcs[MAX_CLIENTS];
	uint64_t filesize = parse_u64(argv[1], "file size");
	int nclients = (int)parse_u64(argv[2], "clients");
	uint64_t ops = parse_u64(argv[3], "calls per client");
	uint32_t io = (uint32_t)parse_u64(argv[4], "I/O size");
	int depth = (int)parse_u64(argv[5], "depth");
	uint64_t blocks = filesize / io, total = 0;
	nfs_fh3 fh = lookup_root(first, argv[0]);
	double start;
	int i, busy;

	if (nclients < 1 || nclients > MAX_CLIENTS)
		die("clients must be 1..%d", MAX_CLIENTS);
	if (blocks == 0 || io % STAMP_EVERY != 0)
		die("bad I/O size for the file");
	conns_filesize = filesize;
	for (i = 0; i < nclients; i++) {
		clients[i].rpc = i == 0 ? first : connect_program(nfsport, NFS_PROGRAM, NFS_V3);
		rpcs[i] = clients[i].rpc;
	}
	start = now();
	do {
		busy = 0;
		for (i = 0; i < nclients; i++) {
			struct client *client = &clients[i];

			while (client->issued < ops && client->inflight < depth) {
				struct client_call *call = xmalloc(sizeof(*call));
				int rc;

				call->client = client;
				call->count = io;
				call->offset = (rng() % blocks) * io;
				if (client->issued % 2 == 0) {
					GETATTR3args args = {0};

					args.object = fh;
					rc = rpc_nfs3_getattr_async(client->rpc, conns_getattr_cb, &args,
								   call);
				} else {
					READ3args args = {0};

					args.file = fh;
					args.offset = call->offset;
					args.count = io;
					rc = rpc_nfs3_read_async(client->rpc, conns_read_cb, &args, call);
				}
				if (rc != 0)
					die("queueing a call: %s", rpc_get_error(client->rpc));
				client->issued++;
				client->inflight++;
			}
			if (client->completed < ops)
				busy = 1;
		}
		if (busy)
			pump(rpcs, nclients);
	} while (busy);
	for (i = 0; i < nclients; i++)
		total += clients[i].completed;
	printf("{\"workload\": \"conns\", \"clients\": %d, \"ops\": %" PRIu64
	       ", \"seconds\": %.6f, \"block\": %u, \"depth\": %d}\n",
	       nclients, total, now() - start, io, depth);
	return 0;
}

/* -- main ------------------------------------------------------------------------- */

static void usage(void)
{
	die("usage: nfsbench [--host H] --nfsport P --mountport M [--export PATH] "
	    "[--uid U] [--gid G] [--timeout S] (seqwrite|seqread|randread|randwrite|meta|conns|remove|fsinfo) ARGS...");
}

int main(int argc, char **argv)
{
	struct rpc_context *rpc;
	const char *workload;
	double timeout = 600;
	int i = 1, nargs;

	while (i < argc && strncmp(argv[i], "--", 2) == 0) {
		if (i + 1 >= argc)
			usage();
		if (strcmp(argv[i], "--host") == 0)
			host = argv[i + 1];
		else if (strcmp(argv[i], "--nfsport") == 0)
			nfsport = (int)parse_u64(argv[i + 1], "port");
		else if (strcmp(argv[i], "--mountport") == 0)
			mountport = (int)parse_u64(argv[i + 1], "port");
		else if (strcmp(argv[i], "--export") == 0)
			export_path = argv[i + 1];
		else if (strcmp(argv[i], "--uid") == 0)
			client_uid = (int)parse_u64(argv[i + 1], "uid");
		else if (strcmp(argv[i], "--gid") == 0)
			client_gid = (int)parse_u64(argv[i + 1], "gid");
		else if (strcmp(argv[i], "--timeout") == 0)
			timeout = (double)parse_u64(argv[i + 1], "timeout");
		else
			usage();
		i += 2;
	}
	if (i >= argc || nfsport == 0 || mountport == 0)
		usage();
	workload = argv[i++];
	nargs = argc - i;
	deadline = now() + timeout;
	rng_state ^= (uint64_t)getpid() << 32 ^ (uint64_t)time(NULL);

	rpc = mount_and_connect();
	if (strcmp(workload, "seqwrite") == 0 && nargs == 4)
		return cmd_seqwrite(rpc, argv + i);
	if (strcmp(workload, "seqread") == 0 && nargs == 4)
		return cmd_seqread(rpc, argv + i);
	if (strcmp(workload, "randread") == 0 && nargs == 5)
		return cmd_random(rpc, argv + i, 0);
	if (strcmp(workload, "randwrite") == 0 && nargs == 5)
		return cmd_random(rpc, argv + i, 1);
	if (strcmp(workload, "meta") == 0 && nargs == 4)
		return cmd_meta(rpc, argv + i);
	if (strcmp(workload, "conns") == 0 && nargs == 6)
		return cmd_conns(rpc, argv + i);
	if (strcmp(workload, "remove") == 0 && nargs == 1) {
		int status = remove_sync(rpc, &root_fh, argv[i]);

		if (status != NFS3_OK && status != NFS3ERR_NOENT)
			die("REMOVE %s: NFS status %d", argv[i], status);
		printf("{\"workload\": \"remove\", \"status\": %d}\n", status);
		return 0;
	}
	if (strcmp(workload, "fsinfo") == 0 && nargs == 0) {
		FSINFO3resok info = fsinfo_sync(rpc);

		printf("{\"workload\": \"fsinfo\", \"rtmax\": %u, \"rtpref\": %u, \"wtmax\": %u"
		       ", \"wtpref\": %u, \"dtpref\": %u}\n",
		       info.rtmax, info.rtpref, info.wtmax, info.wtpref, info.dtpref);
		return 0;
	}
	usage();
	return 1;
}
