import Jinja
import Testing

/// Chat templates shaped like real ones (ChatML, Llama 3 with tools, a Mistral-like one built on
/// lstrip_blocks/trim_blocks), rendered with conversations.
@Suite struct JinjaChatTemplateTests {
    /// A Llama-3-style template with tools, namespace, selectattr, tojson and raise_exception.
    static let llama3Template = #"""
            {{- bos_token }}
            {%- if custom_tools is defined %}
                {%- set tools = custom_tools %}
            {%- endif %}
            {%- if not tools_in_user_message is defined %}
                {%- set tools_in_user_message = true %}
            {%- endif %}
            {%- if not date_string is defined %}
                {%- set date_string = "26 Jul 2024" %}
            {%- endif %}
            {%- if not tools is defined %}
                {%- set tools = none %}
            {%- endif %}

            {#- This block extracts the system message, so we can slot it into the right place. #}
            {%- if messages[0]['role'] == 'system' %}
                {%- set system_message = messages[0]['content']|trim %}
                {%- set messages = messages[1:] %}
            {%- else %}
                {%- set system_message = "" %}
            {%- endif %}

            {#- System message + builtin tools #}
            {{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
            {{- "Cutting Knowledge Date: December 2023\n" }}
            {{- "Today Date: " + date_string + "\n\n" }}
            {%- if tools is not none and not tools_in_user_message %}
                {{- "You have access to the following functions.\n\n" }}
                {%- for t in tools %}
                    {{- t | tojson(indent=4) }}
                    {{- "\n\n" }}
                {%- endfor %}
            {%- endif %}
            {{- system_message }}
            {{- "<|eot_id|>" }}

            {%- set ns = namespace(seen_user=false) %}
            {%- for message in messages %}
                {%- if message.role not in ['user', 'assistant', 'ipython', 'tool'] %}
                    {{- raise_exception('Unknown role: ' ~ message.role) }}
                {%- endif %}
                {%- if message.role == 'user' and tools is not none and tools_in_user_message and not ns.seen_user %}
                    {%- set ns.seen_user = true %}
                    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
                    {{- "Given the following functions, please respond with a JSON for a function call.\n\n" }}
                    {%- for t in tools %}
                        {{- t | tojson(indent=4) }}
                        {{- "\n\n" }}
                    {%- endfor %}
                    {{- message['content'] | trim + '<|eot_id|>' }}
                {%- elif message.tool_calls is defined and message.tool_calls %}
                    {%- set tool_call = message.tool_calls[0].function %}
                    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
                    {{- '{"name": "' + tool_call.name + '", ' }}
                    {{- '"parameters": ' }}
                    {{- tool_call.arguments | tojson }}
                    {{- "}" }}
                    {{- "<|eot_id|>" }}
                {%- elif message.role == "tool" or message.role == "ipython" %}
                    {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
                    {%- if message.content is mapping or message.content is iterable and message.content is not string %}
                        {{- message.content | tojson }}
                    {%- else %}
                        {{- message.content }}
                    {%- endif %}
                    {{- "<|eot_id|>" }}
                {%- else %}
                    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
                {%- endif %}
            {%- endfor %}
            {%- if add_generation_prompt %}
                {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
            {%- endif %}

            """#

    /// A template leaning on lstrip_blocks and trim_blocks.
    static let lstripTemplate = #"""
            {% if messages[0].role == 'system' %}
                {% set offset = 1 %}
            {% else %}
                {% set offset = 0 %}
            {% endif %}
            <s>
            {% for message in messages[offset:] %}
                {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
                    {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
                {% endif %}
                {% if message.role == 'user' %}
                    [INST] {{ message.content | trim }} [/INST]
                {%- else %}
                    {{ ' ' + message.content | trim }}</s>
                {% endif %}
                {# a comment line #}
            {% endfor %}
            {% if messages[0].role == 'system' %}
                sys: {{ messages[0].content }}
            {% endif %}

            """#

    @Test func chatMLWithGenerationPrompt() throws {
        #expect(try render("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}", ["messages": [["role": "system", "content": "  Be brief.  "], ["role": "user", "content": "Hi there"], ["role": "assistant", "content": "Hello! ünïcode ✓"], ["role": "user", "content": "What's 2+2?"]], "add_generation_prompt": true]) == "<|im_start|>system\n  Be brief.  <|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello! ünïcode ✓<|im_end|>\n<|im_start|>user\nWhat's 2+2?<|im_end|>\n<|im_start|>assistant\n")
    }

    @Test func chatMLWithoutGenerationPrompt() throws {
        #expect(try render("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}", ["messages": [["role": "system", "content": "  Be brief.  "], ["role": "user", "content": "Hi there"]], "add_generation_prompt": false]) == "<|im_start|>system\n  Be brief.  <|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n")
    }

    @Test func llama3StyleWithTools() throws {
        let template = Self.llama3Template
        let context: [String: JinjaValue] = ["messages": [["role": "system", "content": "Sys"], ["role": "user", "content": "Weather in Paris?"], ["role": "assistant", "tool_calls": [["function": ["name": "get_weather", "arguments": ["city": "Paris"]]]]], ["role": "tool", "content": ["temp": 21]], ["role": "assistant", "content": "It is 21."]], "tools": [["name": "get_weather", "description": "Weather", "parameters": ["type": "object", "properties": ["city": ["type": "string"]], "required": ["city"]]]], "bos_token": "<|begin_of_text|>", "add_generation_prompt": true]
        let expected = #"""
            <|begin_of_text|><|start_header_id|>system<|end_header_id|>

            Cutting Knowledge Date: December 2023
            Today Date: 26 Jul 2024

            Sys<|eot_id|><|start_header_id|>user<|end_header_id|>

            Given the following functions, please respond with a JSON for a function call.

            {
                "name": "get_weather",
                "description": "Weather",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {
                            "type": "string"
                        }
                    },
                    "required": [
                        "city"
                    ]
                }
            }

            Weather in Paris?<|eot_id|><|start_header_id|>assistant<|end_header_id|>

            {"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>

            {"temp": 21}<|eot_id|><|start_header_id|>assistant<|end_header_id|>

            It is 21.<|eot_id|><|start_header_id|>assistant<|end_header_id|>


            """#
        #expect(try render(template, context) == expected)
    }

    @Test func llama3StyleNoTools() throws {
        let template = Self.llama3Template
        let context: [String: JinjaValue] = ["messages": [["role": "system", "content": "  Be brief.  "], ["role": "user", "content": "Hi there"], ["role": "assistant", "content": "Hello! ünïcode ✓"], ["role": "user", "content": "What's 2+2?"]], "bos_token": "<|begin_of_text|>", "add_generation_prompt": false]
        let expected = #"""
            <|begin_of_text|><|start_header_id|>system<|end_header_id|>

            Cutting Knowledge Date: December 2023
            Today Date: 26 Jul 2024

            Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>

            Hi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>

            Hello! ünïcode ✓<|eot_id|><|start_header_id|>user<|end_header_id|>

            What's 2+2?<|eot_id|>
            """#
        #expect(try render(template, context) == expected)
    }

    @Test func lstripTrimHeavy() throws {
        let template = Self.lstripTemplate
        let context: [String: JinjaValue] = ["messages": [["role": "system", "content": "  Be brief.  "], ["role": "user", "content": "Hi there"], ["role": "assistant", "content": "Hello! ünïcode ✓"], ["role": "user", "content": "What's 2+2?"]]]
        let expected = #"""
            <s>
                    [INST] Hi there [/INST]         Hello! ünïcode ✓</s>
                    [INST] What's 2+2? [/INST]    sys:   Be brief.  

            """#
        #expect(try render(template, context) == expected)
    }

    @Test func lstripTrimHeavyNoSystem() throws {
        let template = Self.lstripTemplate
        let context: [String: JinjaValue] = ["messages": [["role": "user", "content": "Hi there"], ["role": "assistant", "content": "Hello! ünïcode ✓"]]]
        let expected = #"""
            <s>
                    [INST] Hi there [/INST]         Hello! ünïcode ✓</s>

            """#
        #expect(try render(template, context) == expected)
    }
}
