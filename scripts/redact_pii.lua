-- redact_pii.lua: remove personal data from AI prompts before they leave the gateway.
--
-- on_prompt replaces, in the text of every message, e-mail addresses with [EMAIL], card
-- numbers (13 to 19 digits, spaces or dashes allowed between them) with [CARD] and phone
-- numbers (an optional +, then 7 to 15 digits with spaces, dots, dashes or parentheses)
-- with [PHONE], and returns the changed chat, which is what the provider receives.
-- Text in content parts (`content = { {type = "text", text = ...}, ... }`) is redacted too.
--
-- Pattern matching is heuristic: it catches the common shapes, not every way a person can
-- write a phone number; treat it as a safety net, not a guarantee.
--
-- Configure (for every AI front door request):
--   [ai]
--   hooks = "scripts/redact_pii.lua"

-- Each pattern starts with a frontier (%f), so a match is only tried where a run of its
-- characters begins, not at every character inside a word: that keeps gsub linear in the
-- text instead of quadratic in the word length.
local EMAIL = "%f[%w%.%%%+%-_][%w%.%%%+%-_]+@[%w%-_]+%.[%w%.%-_]+"

-- A run of digits and separators that starts and ends with a digit.
local NUMBERISH = "%f[%+%(%d][%+%(]?%d[%d%s%.%-%(%)]*%d"

local function digit_count(s)
	local _, n = string.gsub(s, "%d", "")
	return n
end

local function redact_numbers(run)
	local digits = digit_count(run)
	-- Cards: 13-19 digits separated only by spaces or dashes.
	if digits >= 13 and digits <= 19 and not string.find(run, "[%.%(%)%+]") then
		return "[CARD]"
	end
	if digits >= 7 and digits <= 15 then
		return "[PHONE]"
	end
	return run
end

local function redact(text)
	-- Plain finds are far cheaper than a pattern scan: skip the scans that cannot match.
	if string.find(text, "@", 1, true) then
		text = string.gsub(text, EMAIL, "[EMAIL]")
	end
	if string.find(text, "%d") then
		text = string.gsub(text, NUMBERISH, redact_numbers)
	end
	return text
end

function on_prompt(ctx, chat)
	for _, message in ipairs(chat.messages or {}) do
		if type(message.content) == "string" then
			message.content = redact(message.content)
		elseif type(message.content) == "table" then
			for _, part in ipairs(message.content) do
				if type(part) == "table" and type(part.text) == "string" then
					part.text = redact(part.text)
				end
			end
		end
	end
	return chat
end
