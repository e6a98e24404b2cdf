#  SPDX-License-Identifier: BSD-3-Clause
"""spdk-rpc plugin for quorum-tgt's own methods: the quorum bdev, the NBD export server and
the NBD client bdev.

SPDK's client loads it with ``--plugin`` and calls ``spdk_rpc_plugin_initialize`` with its
sub-command parser; every command below maps its arguments one to one onto the params of a
``bdev_quorum_*``, ``nbd_*`` or ``bdev_nbd_client_*`` method (CONTRACT section 2). Options left out are not sent (SPDK's
client drops ``None``); flags are sent as explicit booleans, as SPDK's own commands do.

    PYTHONPATH=python spdk-rpc -s /var/tmp/spdk.sock --plugin quorum_rpc_plugin \\
        bdev_quorum_create -b Q0 -t 2 Malloc0 Malloc1 Malloc2
"""

from spdk.rpc.cmd_parser import print_dict, print_json


def spdk_rpc_plugin_initialize(subparsers):
    """Adds the quorum commands to spdk-rpc."""

    def bdev_quorum_create(args):
        print_json(args.client.bdev_quorum_create(
            name=args.name,
            base_bdevs=args.base_bdevs,
            vote_threshold=args.vote_threshold,
            read_pattern=args.read_pattern,
            blkverify=args.blkverify,
            rewrite_corrupted=args.rewrite_corrupted,
            child_io_timeout_ms=args.child_io_timeout_ms,
            dirty_region_kb=args.dirty_region_kb))

    p = subparsers.add_parser(
        'bdev_quorum_create',
        help='Create a quorum bdev over base bdevs (QEMU quorum semantics)')
    p.add_argument('-b', '--name', required=True, help='Name of the quorum bdev')
    p.add_argument('-t', '--vote-threshold', dest='vote_threshold', type=int, required=True,
                   help='Children that must agree (reads) or succeed (writes), 1..children')
    p.add_argument('--read-pattern', choices=['quorum', 'fifo'],
                   help='quorum: read all children and vote (default); '
                        'fifo: read the first child that succeeds')
    p.add_argument('--blkverify', action='store_true',
                   help='Debug mode: 2 children, threshold 2; abort on any mismatch')
    p.add_argument('--rewrite-corrupted', action='store_true',
                   help='Write the winning data back to children that disagreed')
    p.add_argument('--child-io-timeout-ms', dest='child_io_timeout_ms', type=int,
                   help='Complete writes without a child that has not answered after this '
                        'long (it becomes out_of_sync); 0 waits forever (default)')
    p.add_argument('--dirty-region-kb', dest='dirty_region_kb', type=int,
                   help='Size of a dirty region, the unit a resync copies (default 1024)')
    p.add_argument('base_bdevs', nargs='+', metavar='BASE', help='Base bdev names, in order')
    p.set_defaults(func=bdev_quorum_create)

    def bdev_quorum_add_child(args):
        args.client.bdev_quorum_add_child(name=args.name, base_bdev=args.base_bdev,
                                          sync=args.sync)

    p = subparsers.add_parser('bdev_quorum_add_child', help='Add a child to a quorum bdev')
    p.add_argument('name', help='Quorum bdev name')
    p.add_argument('base_bdev', help='Base bdev to add')
    p.add_argument('--sync', choices=['full', 'none'],
                   help='full: rebuild it in the background (default); '
                        'none: trust it to hold the data already (QEMU)')
    p.set_defaults(func=bdev_quorum_add_child)

    def quorum_command(method, help_text, child_help=None):
        """A command whose params are the quorum's name and, with `child_help`, a child's."""
        def call(args):
            params = {'name': args.name}
            if child_help:
                params['base_bdev'] = args.base_bdev
            getattr(args.client, method)(**params)

        p = subparsers.add_parser(method, help=help_text)
        p.add_argument('name', help='Quorum bdev name')
        if child_help:
            p.add_argument('base_bdev', help=child_help)
        p.set_defaults(func=call)

    quorum_command('bdev_quorum_delete', 'Delete a quorum bdev')
    quorum_command('bdev_quorum_scrub_stop', 'Stop the scrub of a quorum')

    quorum_command(
        'bdev_quorum_rebuild_start',
        'Copy to a child what it missed (its dirty regions), or all of it if synced',
        'Child to rebuild')
    quorum_command(
        'bdev_quorum_rebuild_stop',
        'Stop the rebuild of a child (it stays out_of_sync)',
        'Child being rebuilt')
    quorum_command(
        'bdev_quorum_remove_child',
        'Remove a child from a quorum bdev (refused while children <= threshold)',
        'Child bdev to remove')

    def bdev_quorum_scrub_start(args):
        args.client.bdev_quorum_scrub_start(name=args.name,
                                            max_bandwidth_mb_sec=args.max_bandwidth_mb_sec)

    p = subparsers.add_parser(
        'bdev_quorum_scrub_start',
        help='Read every region of all synced children, vote, repair the children that lost')
    p.add_argument('name', help='Quorum bdev name')
    p.add_argument('-b', '--max-bandwidth-mb-sec', dest='max_bandwidth_mb_sec', type=int,
                   help='Bandwidth limit in MiB/s (default: none)')
    p.set_defaults(func=bdev_quorum_scrub_start)

    def bdev_quorum_set_options(args):
        args.client.bdev_quorum_set_options(
            process_window_size_kb=args.process_window_size_kb,
            process_max_bandwidth_mb_sec=args.process_max_bandwidth_mb_sec)

    p = subparsers.add_parser(
        'bdev_quorum_set_options',
        help='Set the options of background jobs (SPDK raid names)')
    p.add_argument('-w', '--process-window-size-kb', dest='process_window_size_kb', type=int,
                   help='KiB a scrub reads per window (default 1024)')
    p.add_argument('-b', '--process-max-bandwidth-mb-sec', dest='process_max_bandwidth_mb_sec',
                   type=int, help='Rebuild bandwidth limit in MiB/s (0: none)')
    p.set_defaults(func=bdev_quorum_set_options)

    def bdev_quorum_get_bdevs(args):
        print_dict(args.client.bdev_quorum_get_bdevs(name=args.name))

    p = subparsers.add_parser(
        'bdev_quorum_get_bdevs',
        help='Show quorum bdevs: options, children and per-child counters')
    p.add_argument('-b', '--name', help='Only this quorum bdev')
    p.set_defaults(func=bdev_quorum_get_bdevs)

    def bdev_quorum_get_events(args):
        print_dict(args.client.bdev_quorum_get_events(
            name=args.name, since=args.since, max=args.max))

    p = subparsers.add_parser(
        'bdev_quorum_get_events',
        help='Show QUORUM_REPORT_BAD / QUORUM_FAILURE events (QMP shape)')
    p.add_argument('-b', '--name', help='Only events of this quorum bdev')
    p.add_argument('--since', type=int, help='Only events with an id after this one')
    p.add_argument('--max', type=int, help='At most this many events')
    p.set_defaults(func=bdev_quorum_get_events)

    def nbd_server_start(args):
        print_json(args.client.nbd_server_start(
            listen_addr=args.listen_addr, listen_port=args.listen_port,
            handshake_max_seconds=args.handshake_max_seconds))

    p = subparsers.add_parser(
        'nbd_server_start',
        help='Start the NBD server: an absolute path is a Unix socket, anything else a TCP host')
    p.add_argument('listen_addr', help='Unix socket path or TCP host/address')
    p.add_argument('-p', '--listen-port', dest='listen_port', type=int,
                   help='TCP port (default 10809)')
    p.add_argument('--handshake-max-seconds', dest='handshake_max_seconds', type=int,
                   help='Disconnect clients that have not finished the handshake after this '
                        'many seconds (default 10, 0: no limit)')
    p.set_defaults(func=nbd_server_start)

    def nbd_server_stop(args):
        print_json(args.client.nbd_server_stop())

    p = subparsers.add_parser('nbd_server_stop',
                              help='Stop the NBD server, its exports and their clients')
    p.set_defaults(func=nbd_server_stop)

    def nbd_export_create(args):
        print_json(args.client.nbd_export_create(
            bdev_name=args.bdev_name, export_name=args.export_name, read_only=args.read_only))

    p = subparsers.add_parser('nbd_export_create', help='Export a bdev over NBD')
    p.add_argument('bdev_name', help='Bdev to export')
    p.add_argument('-n', '--export-name', dest='export_name',
                   help='Name clients ask for (default: the bdev name)')
    p.add_argument('-r', '--read-only', dest='read_only', action='store_true',
                   help='Refuse writes')
    p.set_defaults(func=nbd_export_create)

    def nbd_export_delete(args):
        print_json(args.client.nbd_export_delete(export_name=args.export_name))

    p = subparsers.add_parser(
        'nbd_export_delete',
        help='Delete an NBD export; attached clients finish their in-flight I/O first')
    p.add_argument('export_name', help='Export name')
    p.set_defaults(func=nbd_export_delete)

    def nbd_get_exports(args):
        print_dict(args.client.nbd_get_exports())

    p = subparsers.add_parser('nbd_get_exports', help='List NBD exports')
    p.set_defaults(func=nbd_get_exports)

    def bdev_nbd_client_create(args):
        print_json(args.client.bdev_nbd_client_create(
            name=args.name,
            uri=args.uri,
            block_size=args.block_size,
            num_connections=args.num_connections,
            io_timeout_ms=args.io_timeout_ms,
            connect_timeout_ms=args.connect_timeout_ms,
            uuid=args.uuid))

    p = subparsers.add_parser(
        'bdev_nbd_client_create',
        help='Create a bdev over a remote NBD export (nbd://host:port/export, '
             'nbd+unix:///export?socket=PATH)')
    p.add_argument('-b', '--name', required=True, help='Name of the bdev')
    p.add_argument('uri', help='NBD URI of the export')
    p.add_argument('--block-size', dest='block_size', type=int,
                   help='Block size (default 512, or the server minimum when larger)')
    p.add_argument('--num-connections', dest='num_connections', type=int,
                   help='Connections when the server allows several (default: one per reactor)')
    p.add_argument('--io-timeout-ms', dest='io_timeout_ms', type=int,
                   help='A request without reply this long drops the connection (0: never)')
    p.add_argument('--connect-timeout-ms', dest='connect_timeout_ms', type=int,
                   help='Bound of connecting and negotiating')
    p.add_argument('-u', '--uuid', help='UUID of the bdev')
    p.set_defaults(func=bdev_nbd_client_create)

    def bdev_nbd_client_delete(args):
        print_json(args.client.bdev_nbd_client_delete(name=args.name))

    p = subparsers.add_parser('bdev_nbd_client_delete', help='Delete an NBD client bdev')
    p.add_argument('name', help='Bdev name')
    p.set_defaults(func=bdev_nbd_client_delete)
