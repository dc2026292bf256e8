-- Wireshark dissector for the p2p-blocks protocol (TCP port 8888), as PROTOCOL.md specifies.
--
-- Install: copy this file to your Wireshark personal plugins folder
-- (Help > About Wireshark > Folders > Personal Lua Plugins, e.g. ~/.local/lib/wireshark/plugins/)
-- or load it once: wireshark -X lua_script:p2pblocks.lua capture.pcap
-- tshark:          tshark -X lua_script:p2pblocks.lua -r capture.pcap -Y p2pblocks
--
-- A Block Response Success has no length field: its length follows from the Block Request it
-- answers and the file size. The dissector therefore remembers, per TCP conversation, the
-- requests the client sent (answers come in order) and the file size from File Size Responses
-- (per server). A capture that starts mid-connection, before any File Size Response, shows
-- block data as "length unknown" and stops dissecting that direction.

local p2p = Proto("p2pblocks", "p2p-blocks")

local TYPES = {
    [0x00] = "Peer List Request",
    [0x01] = "Peer List Response",
    [0x02] = "Block List Request",
    [0x03] = "Block List Response",
    [0x04] = "Block Request",
    [0x05] = "Block Response Success",
    [0x06] = "Block Response Failure",
    [0x07] = "File Size Request",
    [0x08] = "File Size Response",
    [0x09] = "Digest Request",
    [0x0a] = "Digest Response",
    [0x7f] = "Error",
}

local f = {
    type = ProtoField.uint8("p2pblocks.type", "Type", base.HEX, TYPES),
    start = ProtoField.uint16("p2pblocks.start", "Start block"),
    last = ProtoField.uint16("p2pblocks.end", "End block"),
    count = ProtoField.uint16("p2pblocks.count", "Count"),
    peer_ip = ProtoField.ipv4("p2pblocks.peer.ip", "Peer address"),
    peer_port = ProtoField.uint16("p2pblocks.peer.port", "Peer port"),
    range_start = ProtoField.uint16("p2pblocks.range.start", "Range start"),
    range_end = ProtoField.uint16("p2pblocks.range.end", "Range end"),
    file_size = ProtoField.uint32("p2pblocks.file_size", "File size"),
    reason = ProtoField.stringz("p2pblocks.reason", "Reason"),
    data_len = ProtoField.uint32("p2pblocks.data_len", "Block data length"),
    data = ProtoField.bytes("p2pblocks.data", "Block data"),
    digest = ProtoField.bytes("p2pblocks.digest", "Block digest (SHA-256)"),
}
p2p.fields = f

local port_pref = 8888
p2p.prefs.port = Pref.uint("TCP port", port_pref, "The TCP port p2p-blocks is served on")

-- Per-server file size and per-conversation queue of requests awaiting answers; filled on the
-- first pass, and what each frame's PDUs needed is kept per frame for later passes.
local file_sizes = {}
local pending = {}
local frame_data_len = {}

local function block_geometry(size)
    local block = 1024
    while size > 65536 * block do
        block = block * 2
    end
    return block
end

-- Bytes of blocks start..end of a file of `size` bytes, nil if outside it.
local function span_len(size, first, last)
    local block = block_geometry(size)
    local count = math.floor((size + block - 1) / block)
    if first > last or last >= count then
        return nil
    end
    local stop = math.min((last + 1) * block, size)
    return stop - first * block
end

local function key_of(pinfo, server_port)
    if pinfo.dst_port == server_port then
        return tostring(pinfo.src) .. ":" .. pinfo.src_port .. ">" .. tostring(pinfo.dst) .. ":" .. pinfo.dst_port,
            tostring(pinfo.dst) .. ":" .. pinfo.dst_port
    end
    return tostring(pinfo.dst) .. ":" .. pinfo.dst_port .. ">" .. tostring(pinfo.src) .. ":" .. pinfo.src_port,
        tostring(pinfo.src) .. ":" .. pinfo.src_port
end

-- Length of the request at `offset`, or nil when the type byte is not a request.
local function request_len(tvb, offset)
    local t = tvb(offset, 1):uint()
    if t == 0x00 or t == 0x02 or t == 0x07 then return 1 end
    if t == 0x04 or t == 0x09 then return 5 end
    return nil
end

-- Length of the NUL-terminated reason starting at `offset` (with its NUL), or nil if the NUL
-- has not arrived.
local function reason_len(tvb, offset)
    for i = offset, tvb:len() - 1 do
        if tvb(i, 1):uint() == 0 then
            return i - offset + 1
        end
    end
    return nil
end

local function dissect_pdus(tvb, pinfo, tree)
    local server_port = p2p.prefs.port
    local conversation, server = key_of(pinfo, server_port)
    local to_server = pinfo.dst_port == server_port
    local offset = 0
    local summary = {}
    pending[conversation] = pending[conversation] or {}
    local queue = pending[conversation]

    while offset < tvb:len() do
        local available = tvb:len() - offset
        local t = tvb(offset, 1):uint()
        local len
        if to_server then
            len = request_len(tvb, offset) or 1
        elseif t == 0x01 or t == 0x03 then
            if available < 3 then
                pinfo.desegment_offset = offset
                pinfo.desegment_len = 3 - available
                return
            end
            local count = tvb(offset + 1, 2):uint()
            len = 3 + count * (t == 0x01 and 6 or 4)
        elseif t == 0x05 then
            local key = pinfo.number .. ":" .. offset
            local data_len = frame_data_len[key]
            if data_len == nil and not pinfo.visited then
                local request = queue[1]
                local size = file_sizes[server]
                if request and size then
                    data_len = span_len(size, request.start, request.last)
                end
                frame_data_len[key] = data_len or -1
            end
            if data_len == nil or data_len < 0 then
                local item = tree:add(p2p, tvb(offset), "p2p-blocks: Block Response Success (length unknown)")
                item:add(f.type, tvb(offset, 1))
                return
            end
            len = 1 + data_len
        elseif t == 0x06 or t == 0x7f then
            local rlen = available > 1 and reason_len(tvb, offset + 1) or nil
            if rlen == nil then
                pinfo.desegment_offset = offset
                pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
                return
            end
            len = 1 + rlen
        elseif t == 0x08 then
            len = 5
        elseif t == 0x0a then
            -- As long as the request it answers: 32 bytes for each block asked for.
            local request = queue[1]
            if request == nil or request.start == nil or request.start > request.last then
                local item = tree:add(p2p, tvb(offset), "p2p-blocks: Digest Response (length unknown)")
                item:add(f.type, tvb(offset, 1))
                return
            end
            len = 1 + 32 * (request.last - request.start + 1)
        else
            len = 1
        end
        if available < len then
            pinfo.desegment_offset = offset
            pinfo.desegment_len = len - available
            return
        end

        local name = TYPES[t] or string.format("Unknown type 0x%02x", t)
        local item = tree:add(p2p, tvb(offset, len), "p2p-blocks: " .. name)
        item:add(f.type, tvb(offset, 1))
        table.insert(summary, name)
        if (t == 0x04 or t == 0x09) and to_server then
            item:add(f.start, tvb(offset + 1, 2))
            item:add(f.last, tvb(offset + 3, 2))
        elseif t == 0x01 or t == 0x03 then
            item:add(f.count, tvb(offset + 1, 2))
            local count = tvb(offset + 1, 2):uint()
            for i = 0, count - 1 do
                if t == 0x01 then
                    local at = offset + 3 + i * 6
                    local peer = item:add(p2p, tvb(at, 6), "Peer")
                    peer:add(f.peer_ip, tvb(at, 4))
                    peer:add(f.peer_port, tvb(at + 4, 2))
                else
                    local at = offset + 3 + i * 4
                    local range = item:add(p2p, tvb(at, 4), "Range")
                    range:add(f.range_start, tvb(at, 2))
                    range:add(f.range_end, tvb(at + 2, 2))
                end
            end
        elseif t == 0x05 then
            item:add(f.data_len, tvb(offset, len), len - 1)
            if len > 1 then
                item:add(f.data, tvb(offset + 1, len - 1))
            end
        elseif t == 0x06 or t == 0x7f then
            item:add(f.reason, tvb(offset + 1, len - 1))
        elseif t == 0x08 then
            item:add(f.file_size, tvb(offset + 1, 4))
        elseif t == 0x0a then
            for at = offset + 1, offset + len - 32, 32 do
                item:add(f.digest, tvb(at, 32))
            end
        end

        if not pinfo.visited then
            if to_server and (t == 0x00 or t == 0x02 or t == 0x04 or t == 0x07 or t == 0x09) then
                local request = { kind = t }
                if t == 0x04 or t == 0x09 then
                    request.start = tvb(offset + 1, 2):uint()
                    request.last = tvb(offset + 3, 2):uint()
                end
                table.insert(queue, request)
            elseif not to_server and t ~= 0x7f then
                if t == 0x08 then
                    file_sizes[server] = tvb(offset + 1, 4):uint()
                end
                table.remove(queue, 1)
            end
        end
        offset = offset + len
    end
    pinfo.cols.protocol = "p2p-blocks"
    pinfo.cols.info = table.concat(summary, ", ")
end

function p2p.dissector(tvb, pinfo, tree)
    if tvb:len() == 0 then return 0 end
    dissect_pdus(tvb, pinfo, tree)
    return tvb:len()
end

function p2p.init()
    file_sizes = {}
    pending = {}
    frame_data_len = {}
end

DissectorTable.get("tcp.port"):add(port_pref, p2p)
