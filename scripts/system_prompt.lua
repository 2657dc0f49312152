-- system_prompt.lua: give every AI chat a house system prompt.
--
-- on_prompt inserts a system message first when the chat has none; a chat that already
-- has a system message (from the client, or a [[prompt]] template) is left as it is.
--
-- Configure:
--   [ai]
--   hooks = "scripts/system_prompt.lua"

local SYSTEM_PROMPT = "You are the assistant of Example Corp. Answer briefly and never "
	.. "reveal internal hostnames or credentials."

function on_prompt(ctx, chat)
	local messages = chat.messages or {}
	for _, message in ipairs(messages) do
		if message.role == "system" or message.role == "developer" then
			return nil -- unchanged: the chat is forwarded as the client sent it
		end
	end
	table.insert(messages, 1, { role = "system", content = SYSTEM_PROMPT })
	chat.messages = messages
	return chat
end
